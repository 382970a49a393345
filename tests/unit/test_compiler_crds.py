"""The CRD files, read offline: self-describing, bounded, and in step with the compiler.

The real API server checks them too (tests/integration); these checks need no control plane and
catch the mistakes it would accept silently, such as a missing description or a default that
differs from the one the offline compiler applies.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from laneway_operator import compiler
from router_sidecar import config

CRDS = Path(__file__).resolve().parents[2] / "crds"


@functools.cache
def _crds() -> dict[str, dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = [yaml.load(path.read_text(), Loader=loader) for path in sorted(CRDS.glob("*.yaml"))]
    return {doc["spec"]["names"]["kind"]: doc for doc in docs}


def _crd(kind: str) -> dict[str, Any]:
    return copy.deepcopy(_crds()[kind])


def _schema(kind: str) -> dict[str, Any]:
    return _crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    for part in dotted.split("."):
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


KINDS = ["ModelLane", "RoutingPolicy"]


def _needs_description(path: str, schema: dict[str, Any]) -> bool:
    # Fields and object list items show in `kubectl explain`; scalar list items and map values
    # are described by their list or map, and metadata is Kubernetes' own.
    if path in ("", ".metadata") or path.endswith("{}"):
        return False
    return not path.endswith("[]") or schema.get("type") == "object"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description_for_kubectl_explain(kind: str) -> None:
    missing = [
        path
        for path, schema in _walk(_schema(kind))
        if _needs_description(path, schema) and not schema.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_list_and_string_is_bounded(kind: str) -> None:
    unbounded = []
    for path, schema in _walk(_schema(kind)):
        if schema.get("type") == "array" and "maxItems" not in schema:
            unbounded.append(path)
        free_text = "enum" not in schema and "format" not in schema
        type_meta = path in (".apiVersion", ".kind")
        string = schema.get("type") == "string"
        if string and free_text and not type_meta and "maxLength" not in schema:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_message_says_what_the_value_must_be(kind: str) -> None:
    messages = [
        rule["message"]
        for _, schema in _walk(_schema(kind))
        for rule in schema.get("x-kubernetes-validations", [])
    ]
    assert messages
    assert [m for m in messages if not m.startswith("must ")] == []


@pytest.mark.parametrize(("kind", "short"), [("ModelLane", "lane"), ("RoutingPolicy", "rpol")])
def test_kinds_are_namespaced_with_short_names_and_a_status_subresource(
    kind: str, short: str
) -> None:
    crd = _crd(kind)
    assert crd["spec"]["group"] == compiler.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == [short]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}


def test_lane_columns_show_provider_model_phase_and_latency_with_extras_in_wide() -> None:
    columns = _crd("ModelLane")["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default == ["Provider", "Model", "Phase", "Latency-ms", "Age"]
    assert {c["jsonPath"] for c in columns} >= {".status.phase", ".status.lastProbe.latencyMs"}
    assert any(c.get("priority") == 1 for c in columns)


def test_policy_columns_read_ready_from_the_named_condition() -> None:
    columns = _crd("RoutingPolicy")["spec"]["versions"][0]["additionalPrinterColumns"]
    by_name = {c["name"]: c for c in columns}
    assert [c["name"] for c in columns if c.get("priority", 0) == 0] == [
        "Mode",
        "Ready",
        "Version",
        "Active-Lanes",
        "Degraded",
        "Age",
    ]
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert by_name["Active-Lanes"]["jsonPath"] == ".status.activeLanesSummary"


def test_enums_match_the_router_config_vocabulary() -> None:
    lane, policy = _schema("ModelLane"), _schema("RoutingPolicy")
    assert _at(lane, "spec.provider.type")["enum"] == list(config.PROVIDER_TYPES)
    assert _at(lane, "spec.capabilities.[]")["enum"] == list(config.CAPABILITIES)
    assert _at(lane, "status.phase")["enum"] == list(config.LANE_PHASES)
    assert _at(policy, "spec.mode")["enum"] == list(config.MODES)
    assert _at(policy, "spec.escalation.triggers.[]")["enum"] == list(config.ESCALATION_TRIGGERS)
    assert _at(policy, "spec.fallback.triggers.[]")["enum"] == list(config.FALLBACK_TRIGGERS)
    assert _at(policy, "spec.budget.onExceed")["enum"] == list(config.BUDGET_ACTIONS)


def test_condition_schema_names_every_condition_key_the_router_knows() -> None:
    when = _at(_schema("RoutingPolicy"), "spec.triage.[].when")
    assert sorted(when["properties"]) == sorted(config.CONDITION_KEYS)
    nested = when["properties"]["anyOf"]["items"]
    assert sorted(nested["properties"]) == sorted(config.CONDITION_KEYS)
    # Below the second level the tree is free-form and left to the compiler.
    deep = nested["properties"]["allOf"]["items"]
    assert deep["x-kubernetes-preserve-unknown-fields"] is True


def test_schema_defaults_are_the_defaults_the_offline_compiler_applies() -> None:
    lane, policy = _schema("ModelLane"), _schema("RoutingPolicy")
    for key, value in compiler.DEFAULT_TIMEOUTS.items():
        assert _at(lane, f"spec.timeouts.{key}")["default"] == value
    for key, value in compiler.DEFAULT_PROBE.items():
        assert _at(lane, f"spec.healthProbe.{key}")["default"] == value
    assert _at(policy, "spec.mode")["default"] == "enforce"
    fallback = "spec.fallback"
    assert _at(policy, f"{fallback}.triggers")["default"] == list(
        compiler.DEFAULT_FALLBACK_TRIGGERS
    )
    assert _at(policy, f"{fallback}.retries.max")["default"] == compiler.DEFAULT_RETRIES["max"]
    assert (
        _at(policy, f"{fallback}.retries.backoff")["default"] == compiler.DEFAULT_RETRIES["backoff"]
    )
    for key, value in compiler.DEFAULT_BREAKER.items():
        assert _at(policy, f"{fallback}.circuitBreaker.{key}")["default"] == value
    assert (
        _at(policy, f"{fallback}.retryBudgetPercent")["default"]
        == compiler.DEFAULT_RETRY_BUDGET_PERCENT
    )
    escalation = "spec.escalation"
    assert (
        _at(policy, f"{escalation}.maxEscalations")["default"] == compiler.DEFAULT_MAX_ESCALATIONS
    )
    assert _at(policy, f"{escalation}.lowRiskLevels")["default"] == list(
        compiler.DEFAULT_LOW_RISK_LEVELS
    )
    assert _at(policy, "spec.complexity.base")["default"] == compiler.DEFAULT_COMPLEXITY_BASE
    assert _at(policy, "spec.budget.onExceed")["default"] == "skipLane"


def test_duration_rules_use_the_same_pattern_as_the_compiler() -> None:
    from laneway_operator.durations import DURATION_PATTERN

    cel_pattern = DURATION_PATTERN.replace("\\", "\\\\")
    rules = [
        rule["rule"]
        for kind in KINDS
        for _, schema in _walk(_schema(kind))
        for rule in schema.get("x-kubernetes-validations", [])
        if "duration(" in rule["rule"]
    ]
    assert len(rules) >= 8
    assert all(f"'{cel_pattern}'" in rule for rule in rules)
