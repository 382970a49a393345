"""Compiling RoutingPolicies: the config a policy becomes, its stability, and lane health.

The example manifests in `examples/` are the inputs, so the documented policy is the tested one.
The golden file pins the whole compiled document; regenerate it after an intended change with
`LANEWAY_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_compiler.py` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from laneway_operator.compiler import (
    active_lanes,
    active_lanes_summary,
    compile_policy,
    referenced_lanes,
    render_config,
    route_status,
)
from laneway_operator.durations import parse_duration
from laneway_operator.manifests import load_manifests, select_policy
from router_sidecar.config import content_version, parse_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "support-bot.json"


def example(policy: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    return select_policy(load_manifests([str(REPO / "examples")]), policy, "team-a")


def plain(obj: Any) -> Any:
    """A deep copy made of plain dicts and lists (manifests carry their source file)."""
    return json.loads(json.dumps(obj))


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same data with every mapping's keys in a random order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


def test_support_bot_compiles_to_the_checked_in_golden_config() -> None:
    text = render_config(compile_policy(*example("support-bot")))
    if os.environ.get("LANEWAY_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_compiled_config_loads_in_the_sidecar_with_the_policy_as_written() -> None:
    config = parse_config(compile_policy(*example("support-bot")))
    assert (config.policy_namespace, config.policy_name, config.mode) == (
        "team-a",
        "support-bot",
        "enforce",
    )
    assert config.routes["fast"].lanes == ("fast-mini", "fast-mini-backup")
    assert [rule.name for rule in config.triage] == [
        "tools-or-high-stakes",
        "technical-or-long",
        "enterprise",
    ]
    assert config.escalation.path == {"fast": "strong", "strong": "premium"}
    assert config.fallback.backoff_ms == 200
    assert config.fallback.breaker_cooldown_ms == 30_000
    assert config.lanes["premium-agent"].provider.type == "anthropic"
    assert config.lanes["fast-mini"].total_ms == 60_000


def test_version_is_the_content_hash_and_render_ends_with_a_newline() -> None:
    doc = compile_policy(*example("support-bot"))
    assert doc["version"] == content_version(doc)
    text = render_config(doc)
    assert text.endswith("}\n")
    assert json.loads(text) == doc


@pytest.mark.parametrize("seed", range(5))
def test_key_order_does_not_change_the_bytes_or_the_version(seed: int) -> None:
    policy, lanes = example("support-bot")
    baseline = render_config(compile_policy(policy, lanes))
    rng = random.Random(seed)
    names = list(lanes)
    rng.shuffle(names)
    reordered = {name: shuffled(plain(lanes[name]), rng) for name in names}
    assert render_config(compile_policy(shuffled(plain(policy), rng), reordered)) == baseline


def test_order_of_set_like_lists_does_not_change_the_version() -> None:
    policy, lanes = example("support-bot")
    baseline = compile_policy(policy, lanes)["version"]
    policy, lanes = plain(policy), plain(lanes)
    policy["spec"]["escalation"]["triggers"].reverse()
    policy["spec"]["fallback"]["triggers"].reverse()
    lanes["fast-mini"]["spec"]["capabilities"].reverse()
    assert compile_policy(policy, lanes)["version"] == baseline


def test_integer_and_float_spellings_of_a_number_compile_the_same() -> None:
    policy, lanes = example("support-bot")
    lanes = plain(lanes)
    lanes["fast-mini-backup"]["spec"]["pricing"] = {"inputPerMillion": 1, "outputPerMillion": 5}
    assert compile_policy(policy, lanes) == compile_policy(*example("support-bot"))


def test_changing_the_policy_changes_the_version() -> None:
    policy, lanes = example("support-bot")
    changed = plain(policy)
    changed["spec"]["latencyBudgetMs"] = 15000
    assert compile_policy(changed, lanes)["version"] != compile_policy(policy, lanes)["version"]


def test_only_lanes_the_policy_references_are_compiled_in() -> None:
    policy, lanes = example("docs-assistant")
    doc = compile_policy(policy, lanes)
    assert sorted(doc["lanes"]) == [
        "fast-mini",
        "fast-mini-backup",
        "strong-backup",
        "strong-reasoning",
    ]
    unrelated = dict(lanes)
    unrelated.pop("premium-agent")
    assert compile_policy(policy, unrelated) == doc


def test_secrets_go_in_as_references_only() -> None:
    policy, lanes = example("support-bot")
    lanes = plain(lanes)
    lanes["fast-mini"]["spec"]["provider"]["apiKey"] = "sk-should-never-be-copied"
    text = render_config(compile_policy(policy, lanes))
    assert "sk-should-never-be-copied" not in text
    doc = json.loads(text)
    assert doc["lanes"]["fast-mini"]["provider"]["apiKeySecretRef"] == {
        "name": "provider-openai",
        "key": "apiKey",
    }


def test_a_lane_without_an_api_key_compiles_without_a_reference() -> None:
    policy, lanes = example("support-bot")
    lanes = plain(lanes)
    del lanes["fast-mini"]["spec"]["provider"]["apiKeySecretRef"]
    doc = compile_policy(policy, lanes)
    assert "apiKeySecretRef" not in doc["lanes"]["fast-mini"]["provider"]
    assert parse_config(doc).lanes["fast-mini"].provider.api_key is None


def test_offline_compile_applies_the_crd_defaults() -> None:
    policy, lanes = example("docs-assistant")
    doc = compile_policy(policy, lanes)
    assert doc["escalation"]["maxEscalations"] == 1
    assert doc["escalation"]["lowRiskLevels"] == ["low"]
    assert doc["escalation"]["toolFailureThreshold"] == 0
    assert doc["fallback"]["triggers"] == sorted(
        ["rateLimited", "timeout", "serverError", "connectionError", "contextOverflow"]
    )
    assert doc["fallback"]["circuitBreaker"] == {"consecutiveFailures": 5, "cooldownMs": 30_000}
    assert doc["budget"] == {"maxCostPerRequest": None, "onExceed": "skipLane"}
    assert doc["latencyBudgetMs"] is None

    minimal = plain(lanes["fast-mini"])
    del minimal["spec"]["timeouts"]
    lanes = {**lanes, "fast-mini": minimal}
    timeouts = compile_policy(policy, lanes)["lanes"]["fast-mini"]["timeouts"]
    assert timeouts == {"connectMs": 5_000, "firstTokenMs": 30_000, "totalMs": 120_000}


def test_a_policy_without_a_namespace_is_compiled_as_default() -> None:
    policy, lanes = example("support-bot")
    policy = plain(policy)
    del policy["metadata"]["namespace"]
    assert compile_policy(policy, lanes)["policy"] == {
        "name": "support-bot",
        "namespace": "default",
    }


# ---------------------------------------------------------------------------------------------
# Lane phases and active lanes.


def test_lane_phases_default_to_unknown_offline() -> None:
    doc = compile_policy(*example("support-bot"))
    assert {lane["phase"] for lane in doc["lanes"].values()} == {"Unknown"}


def test_lane_phases_come_from_the_argument_or_else_from_lane_status() -> None:
    policy, lanes = example("support-bot")
    lanes = plain(lanes)
    lanes["fast-mini"]["status"] = {"phase": "Down"}
    from_status = compile_policy(policy, lanes)
    assert from_status["lanes"]["fast-mini"]["phase"] == "Down"
    given = compile_policy(policy, lanes, {"fast-mini": "Healthy", "strong-reasoning": "Bogus"})
    assert given["lanes"]["fast-mini"]["phase"] == "Healthy"
    assert given["lanes"]["strong-reasoning"]["phase"] == "Unknown"
    assert given["version"] != from_status["version"]


def test_a_down_primary_hands_its_route_to_the_next_lane_that_is_not_down() -> None:
    policy, lanes = example("support-bot")
    phases = {
        "fast-mini": "Down",
        "fast-mini-backup": "Degraded",
        "strong-reasoning": "Healthy",
        "premium-agent": "Down",
        "premium-backup": "Down",
    }
    doc = compile_policy(policy, lanes, phases)
    assert active_lanes(doc) == {
        "fast": "fast-mini-backup",
        "strong": "strong-reasoning",
        "premium": None,
    }
    assert active_lanes_summary(doc) == "fast=fast-mini-backup strong=strong-reasoning premium=-"
    status = route_status(doc)
    assert status[0] == {
        "name": "fast",
        "activeLane": "fast-mini-backup",
        "lanes": [
            {"name": "fast-mini", "phase": "Down"},
            {"name": "fast-mini-backup", "phase": "Degraded"},
        ],
    }
    assert status[2]["activeLane"] is None


def test_a_recovered_lane_takes_its_route_back() -> None:
    policy, lanes = example("support-bot")
    down = compile_policy(policy, lanes, {"fast-mini": "Down"})
    up = compile_policy(policy, lanes, {"fast-mini": "Healthy"})
    assert active_lanes(down)["fast"] == "fast-mini-backup"
    assert active_lanes(up)["fast"] == "fast-mini"


def test_referenced_lanes_lists_each_lane_once_in_order_of_use() -> None:
    policy, _ = example("support-bot")
    assert referenced_lanes(policy) == [
        "fast-mini",
        "fast-mini-backup",
        "strong-reasoning",
        "strong-backup",
        "premium-agent",
        "premium-backup",
    ]


@pytest.mark.parametrize(
    "policy",
    [{}, {"spec": None}, {"spec": {"routes": "fast"}}, {"spec": {"routes": [None, {"lanes": 3}]}}],
)
def test_referenced_lanes_tolerates_a_broken_policy(policy: dict[str, Any]) -> None:
    assert referenced_lanes(policy) == []


def test_compiling_does_not_modify_its_inputs() -> None:
    policy, lanes = example("support-bot")
    before = copy.deepcopy((plain(policy), plain(lanes)))
    doc = compile_policy(policy, lanes)
    doc["triage"][0]["when"]["anyOf"].clear()
    assert (plain(policy), plain(lanes)) == before


# ---------------------------------------------------------------------------------------------
# Durations.


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("200ms", 200),
        ("5s", 5_000),
        ("1.5s", 1_500),
        ("2m", 120_000),
        ("1h30m", 5_400_000),
        ("1m30s", 90_000),
        ("0s", 0),
    ],
)
def test_durations_parse_to_milliseconds(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["5", "5 s", "5sec", "-1s", "1d", "", "s", "5s\n", "1.s", 5])
def test_durations_without_a_known_unit_are_rejected_with_an_example(text: Any) -> None:
    with pytest.raises(ValueError, match="for example 500ms, 5s"):
        parse_duration(text)
