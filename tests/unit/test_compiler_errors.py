"""Compile errors: each names the resource, the field and the fix, with a one-word reason.

Two groups. The semantic checks no schema can make (missing lanes, escalation cycles, tools sent
to a route without a tools lane, condition trees below the schema's second level), and the
checks the API server's CEL rules make, repeated because `laneway compile` runs without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from laneway_operator.compiler import CompileError, compile_policy
from laneway_operator.manifests import load_manifests, select_policy

REPO = Path(__file__).resolve().parents[2]

Spec = dict[str, Any]


def example() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    policy, lanes = select_policy(load_manifests([str(REPO / "examples")]), "support-bot", "team-a")
    return json.loads(json.dumps(policy)), json.loads(json.dumps(lanes))


def compile_error(
    policy_change: Callable[[Spec], Any] | None = None,
    lane_change: Callable[[Spec], Any] | None = None,
    lane: str = "fast-mini",
) -> CompileError:
    policy, lanes = example()
    if policy_change:
        policy_change(policy["spec"])
    if lane_change:
        lane_change(lanes[lane]["spec"])
    with pytest.raises(CompileError) as info:
        compile_policy(policy, lanes)
    return info.value


# ---------------------------------------------------------------------------------------------
# Semantic checks.


def test_a_missing_lane_names_the_route_entry_and_the_lanes_that_exist() -> None:
    err = compile_error(lambda s: s["routes"][1]["lanes"].append("strong-typo"))
    assert err.resource == "RoutingPolicy team-a/support-bot"
    assert err.field == "spec.routes[1].lanes[2]"
    assert err.reason == "LaneNotFound"
    assert "ModelLane 'strong-typo' does not exist in namespace team-a" in err.message
    assert "create it or remove it from route 'strong'" in err.message
    assert "fast-mini-backup" in err.message
    assert str(err) == f"{err.resource}: {err.field}: {err.message}"


def test_an_escalation_cycle_is_shown_step_by_step() -> None:
    err = compile_error(lambda s: s["escalation"]["path"].append({"from": "premium", "to": "fast"}))
    assert (err.field, err.reason) == ("spec.escalation.path", "EscalationCycle")
    assert "fast -> strong -> premium -> fast" in err.message
    assert "remove one of these steps" in err.message


def test_a_route_escalating_to_itself_is_a_cycle() -> None:
    err = compile_error(lambda s: s["escalation"].update(path=[{"from": "fast", "to": "fast"}]))
    assert err.reason == "EscalationCycle"
    assert "(fast -> fast)" in err.message


def test_a_route_with_two_escalation_targets_is_rejected() -> None:
    err = compile_error(lambda s: s["escalation"]["path"].append({"from": "fast", "to": "premium"}))
    assert (err.field, err.reason) == ("spec.escalation.path[2].from", "DuplicateEscalationStep")


def test_tools_requests_need_a_tools_capable_lane_on_their_route() -> None:
    def no_tools(spec: Spec) -> None:
        spec["capabilities"] = ["streaming"]

    policy, lanes = example()
    for name in ("premium-agent", "premium-backup"):
        no_tools(lanes[name]["spec"])
    with pytest.raises(CompileError) as info:
        compile_policy(policy, lanes)
    err = info.value
    assert (err.field, err.reason) == ("spec.triage[0].route", "NoToolsLane")
    assert "premium-agent, premium-backup" in err.message
    assert "add the capability to a lane or route these requests elsewhere" in err.message


def test_one_tools_capable_lane_on_the_route_is_enough() -> None:
    policy, lanes = example()
    lanes["premium-agent"]["spec"]["capabilities"] = ["streaming"]
    compile_policy(policy, lanes)


def test_a_rule_that_excludes_tools_may_route_to_a_lane_without_them() -> None:
    policy, lanes = example()
    policy["spec"]["triage"][0]["when"] = {"not": {"hasTools": True}}
    for name in ("premium-agent", "premium-backup"):
        lanes[name]["spec"]["capabilities"] = []
    compile_policy(policy, lanes)


def test_a_double_negated_tools_condition_still_needs_a_tools_lane() -> None:
    policy, lanes = example()
    policy["spec"]["triage"][0]["when"] = {"not": {"not": {"hasTools": True}}}
    for name in ("premium-agent", "premium-backup"):
        lanes[name]["spec"]["capabilities"] = []
    with pytest.raises(CompileError, match="sends requests with tools"):
        compile_policy(policy, lanes)


@pytest.mark.parametrize(
    ("when", "field", "fragment"),
    [
        (
            {"anyOf": [{"allOf": [{"keywordAny": ["x"]}]}]},
            "spec.triage[1].when.anyOf[0].allOf[0].keywordAny",
            "unknown condition",
        ),
        (
            {"anyOf": [{"not": {"anyOf": []}}]},
            "spec.triage[1].when.anyOf[0].not.anyOf",
            "non-empty list",
        ),
        (
            {"anyOf": [{"allOf": [{"promptCharsOver": "long"}]}]},
            "spec.triage[1].when.anyOf[0].allOf[0].promptCharsOver",
            "must be int",
        ),
        ({}, "spec.triage[1].when", "at least one condition key"),
    ],
)
def test_invalid_condition_trees_name_the_deepest_bad_field(
    when: dict[str, Any], field: str, fragment: str
) -> None:
    err = compile_error(lambda s: s["triage"][1].update(when=when))
    assert (err.field, err.reason) == (field, "InvalidCondition")
    assert fragment in err.message


def test_an_absurdly_deep_condition_tree_is_rejected_not_recursed() -> None:
    when: dict[str, Any] = {"hasTools": True}
    for _ in range(500):
        when = {"not": when}
    err = compile_error(lambda s: s["triage"][1].update(when=when))
    assert err.reason == "InvalidCondition"
    assert "at most 8 deep" in err.message


def test_complexity_signal_conditions_are_validated_too() -> None:
    err = compile_error(lambda s: s["complexity"]["signals"][0].update(when={"tierIn": []}))
    assert err.field == "spec.complexity.signals[0].when.tierIn"


# ---------------------------------------------------------------------------------------------
# Checks the CRD's schema and CEL rules make on the API server, repeated offline.


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        target: Any = spec
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(path: str) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        target: Any = spec
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


POLICY_CASES = [
    ("routes", _set("routes", []), "spec.routes", "must hold at least one route"),
    (
        "route without lanes",
        _set("routes.0.lanes", []),
        "spec.routes[0].lanes",
        "at least one ModelLane",
    ),
    ("duplicate route", _set("routes.2.name", "fast"), "spec.routes[2].name", "defined twice"),
    (
        "route named auto",
        _set("routes.0.name", "auto"),
        "spec.routes[0].name",
        "must be a lowercase DNS label",
    ),
    (
        "lane twice in a route",
        _set("routes.0.lanes", ["fast-mini", "fast-mini"]),
        "spec.routes[0].lanes[1]",
        "listed twice",
    ),
    (
        "unknown default route",
        _set("defaultRoute", "cheap"),
        "spec.defaultRoute",
        "route 'cheap' is not defined; use one of fast, strong, premium",
    ),
    (
        "unknown triage route",
        _set("triage.2.route", "gold"),
        "spec.triage[2].route",
        "route 'gold' is not defined",
    ),
    (
        "duplicate rule name",
        _set("triage.1.name", "enterprise"),
        "spec.triage[2].name",
        "used twice",
    ),
    ("unknown mode", _set("mode", "shadow"), "spec.mode", "must be one of enforce, observe"),
    (
        "band above 5",
        _set("complexity.bands.2.max", 6),
        "spec.complexity.bands[2].max",
        "must be between 1 and 5",
    ),
    (
        "band gap",
        _set("complexity.bands.1.max", 3),
        "spec.complexity.bands",
        "must map every score from 1 to 5",
    ),
    (
        "band min above max",
        _set("complexity.bands.0", {"min": 2, "max": 1, "route": "fast"}),
        "spec.complexity.bands[0].max",
        "must be at least min",
    ),
    (
        "band to unknown route",
        _set("complexity.bands.0.route", "nope"),
        "spec.complexity.bands[0].route",
        "is not defined",
    ),
    (
        "unknown escalation trigger",
        _set("escalation.triggers", ["slow"]),
        "spec.escalation.triggers[0]",
        "must be one of schemaInvalid",
    ),
    (
        "unknown fallback trigger",
        _set("fallback.triggers", ["http418"]),
        "spec.fallback.triggers[0]",
        "must be one of rateLimited",
    ),
    (
        "too many escalations",
        _set("escalation.maxEscalations", 6),
        "spec.escalation.maxEscalations",
        "must be between 0 and 5",
    ),
    (
        "escalation to unknown route",
        _set("escalation.path.0.to", "gold"),
        "spec.escalation.path[0].to",
        "is not defined",
    ),
    (
        "negative budget",
        _set("budget.maxCostPerRequest", -0.1),
        "spec.budget.maxCostPerRequest",
        "must be at least 0",
    ),
    (
        "unknown budget action",
        _set("budget.onExceed", "warn"),
        "spec.budget.onExceed",
        "must be one of skipLane, reject",
    ),
    (
        "bad backoff",
        _set("fallback.retries.backoff", "200"),
        "spec.fallback.retries.backoff",
        "is not a duration",
    ),
    (
        "zero breaker threshold",
        _set("fallback.circuitBreaker.consecutiveFailures", 0),
        "spec.fallback.circuitBreaker.consecutiveFailures",
        "must be at least 1",
    ),
    (
        "latency budget as text",
        _set("latencyBudgetMs", "20s"),
        "spec.latencyBudgetMs",
        "must be an integer",
    ),
    (
        "boolean weight",
        _set("complexity.signals.0.weight", True),
        "spec.complexity.signals[0].weight",
        "must be a number",
    ),
    ("no default route", _drop("defaultRoute"), "spec.defaultRoute", "is required"),
    (
        "selfCheck trigger without its lane",
        _set("escalation.triggers", ["uncertain", "selfCheck"]),
        "spec.escalation.selfCheck",
        "must name selfCheck.lane, the lane that checks the answers",
    ),
    (
        "selfCheck lane outside the routes",
        _set("escalation.selfCheck", {"lane": "judge-lane"}),
        "spec.escalation.selfCheck.lane",
        "'judge-lane' is not a lane of this policy's routes; use one of fast-mini",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [case[1:] for case in POLICY_CASES],
    ids=[case[0] for case in POLICY_CASES],
)
def test_policy_mistakes_are_reported_at_their_field(
    change: Callable[[Spec], None], field: str, fragment: str
) -> None:
    err = compile_error(change)
    assert err.resource == "RoutingPolicy team-a/support-bot"
    assert err.field == field
    assert fragment in err.message


LANE_CASES = [
    (
        "unknown provider",
        _set("provider.type", "bedrock"),
        "spec.provider.type",
        "must be one of openai, anthropic",
    ),
    (
        "base URL without scheme",
        _set("provider.baseURL", "api.openai.com/v1"),
        "spec.provider.baseURL",
        "must start with http:// or https://",
    ),
    (
        "negative price",
        _set("pricing.outputPerMillion", -1),
        "spec.pricing.outputPerMillion",
        "must be at least 0",
    ),
    (
        "context below output",
        _set("limits.contextWindow", 1000),
        "spec.limits.contextWindow",
        "must be at least maxOutputTokens (16000)",
    ),
    (
        "unknown capability",
        _set("capabilities", ["tools", "audio"]),
        "spec.capabilities[1]",
        "must be one of tools, jsonSchema, streaming, vision",
    ),
    (
        "duration without unit",
        _set("timeouts.total", "60"),
        "spec.timeouts.total",
        "is not a duration",
    ),
    (
        "zero duration",
        _set("timeouts.connect", "0s"),
        "spec.timeouts.connect",
        "must be longer than zero",
    ),
    (
        "first token after total",
        _set("timeouts.firstToken", "2m"),
        "spec.timeouts.firstToken",
        "must not be longer than spec.timeouts.total",
    ),
    ("missing model", _drop("provider.model"), "spec.provider.model", "is required"),
    (
        "empty secret key",
        _set("provider.apiKeySecretRef.key", " "),
        "spec.provider.apiKeySecretRef.key",
        "must not be empty",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [case[1:] for case in LANE_CASES],
    ids=[case[0] for case in LANE_CASES],
)
def test_lane_mistakes_name_the_lane_and_its_field(
    change: Callable[[Spec], None], field: str, fragment: str
) -> None:
    err = compile_error(lane_change=change)
    assert err.resource == "ModelLane team-a/fast-mini"
    assert err.field == field
    assert fragment in err.message


def test_an_object_of_the_wrong_kind_is_not_compiled_as_a_policy() -> None:
    policy, lanes = example()
    policy["kind"] = "ModelLane"
    with pytest.raises(CompileError) as info:
        compile_policy(policy, lanes)
    assert (info.value.field, info.value.reason) == ("kind", "WrongKind")


def test_a_policy_without_a_name_is_an_error_not_a_crash() -> None:
    policy, lanes = example()
    del policy["metadata"]["name"]
    with pytest.raises(CompileError, match=r"metadata\.name: is required"):
        compile_policy(policy, lanes)


# ---------------------------------------------------------------------------------------------
# Parity with the API server: every manifest it rejects, `laneway compile` rejects too.

INVALID = sorted((REPO / "tests" / "integration" / "invalid").glob("*.yaml"))
SUPPORT = """
apiVersion: routing.laneway.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: uses-bad-lane}
spec:
  selector: {}
  routes: [{name: only, lanes: [bad-lane]}]
  defaultRoute: only
"""


def _lane(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "ModelLane",
        "metadata": {"name": name},
        "spec": {
            "provider": {"type": "openai", "baseURL": "http://127.0.0.1:1/v1", "model": "m"},
            "pricing": {"inputPerMillion": 1, "outputPerMillion": 1},
            "limits": {"contextWindow": 1000, "maxOutputTokens": 10},
        },
    }


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_every_manifest_the_api_server_rejects_fails_to_compile_offline(path: Path) -> None:
    bad = yaml.safe_load(path.read_text())
    if bad["kind"] == "ModelLane":
        policy, lanes = yaml.safe_load(SUPPORT), {"bad-lane": bad}
    else:
        policy, lanes = bad, {name: _lane(name) for name in ("fast-mini", "strong-reasoning")}
    with pytest.raises(CompileError):
        compile_policy(policy, lanes)
