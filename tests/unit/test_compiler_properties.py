"""Property tests: whatever a user writes, the compiler answers with a config or a CompileError.

Three generators. `valid_inputs` builds policies that follow every rule (they must compile, and
the result must load in the sidecar); `plausible_inputs` mixes in the mistakes people make
(unknown names, bad durations, cycles, wrong types, broken condition trees); `junk` puts arbitrary
JSON where objects belong. None may raise anything but CompileError.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laneway_operator.compiler import CompileError, compile_policy, render_config
from router_sidecar.config import CAPABILITIES, ESCALATION_TRIGGERS, FALLBACK_TRIGGERS, parse_config

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROUTES = ["fast", "strong", "premium"]
LANES = ["lane-a", "lane-b", "lane-c", "lane-d"]
DURATIONS = ["200ms", "1s", "5s", "1m", "1h30m", "2.5s"]

json_scalars = (
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(-2, 2) | st.text(max_size=5)
)
junk = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["when", "name", "lanes", "x", "spec", "anyOf"]), children, max_size=3
        )
    ),
    max_leaves=10,
)

# ---------------------------------------------------------------------------------------------
# Valid inputs.

leaf_conditions = st.one_of(
    st.builds(lambda n: {"promptCharsOver": n}, st.integers(0, 10_000)),
    st.builds(lambda n: {"promptTokensOver": n}, st.integers(0, 10_000)),
    st.builds(lambda n: {"filesOver": n}, st.integers(0, 5)),
    st.builds(lambda b: {"hasCodeBlock": b}, st.booleans()),
    st.builds(lambda b: {"hasTools": b}, st.booleans()),
    st.builds(
        lambda ks: {"keywordsAny": ks},
        st.lists(st.sampled_from(["sql", "debug", "unit test"]), min_size=1, max_size=3),
    ),
    st.builds(lambda ks: {"keywordsAll": ks}, st.lists(st.sampled_from(["a", "b"]), min_size=1)),
    st.builds(
        lambda ts: {"tierIn": ts},
        st.lists(st.sampled_from(["free", "enterprise"]), min_size=1, max_size=2),
    ),
    st.builds(lambda ts: {"riskIn": ts}, st.lists(st.sampled_from(["low", "high"]), min_size=1)),
)
conditions = st.recursive(
    leaf_conditions,
    lambda children: st.one_of(
        st.builds(lambda cs: {"allOf": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: {"anyOf": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)


def lane_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "ModelLane",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
    }


@st.composite
def valid_lane_spec(draw: st.DrawFn) -> dict[str, Any]:
    ctx = draw(st.integers(1, 1_000_000))
    spec: dict[str, Any] = {
        "provider": {
            "type": draw(st.sampled_from(["openai", "anthropic"])),
            "baseURL": draw(st.sampled_from(["https://api.example.com/v1", "http://127.0.0.1:9"])),
            "model": "m",
        },
        "pricing": {
            "inputPerMillion": draw(st.floats(0, 100) | st.integers(0, 100)),
            "outputPerMillion": draw(st.floats(0, 100) | st.integers(0, 100)),
        },
        "limits": {"contextWindow": ctx, "maxOutputTokens": draw(st.integers(1, ctx))},
        # Always tools: hasTools rules may point anywhere.
        "capabilities": ["tools", *draw(st.lists(st.sampled_from(CAPABILITIES), max_size=3))],
    }
    if draw(st.booleans()):
        spec["timeouts"] = {"connect": "1s", "firstToken": "5s", "total": "1m"}
    return spec


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    route_names = draw(st.lists(st.sampled_from(ROUTES), min_size=1, unique=True))
    routes = [
        {"name": name, "lanes": draw(st.lists(st.sampled_from(LANES), min_size=1, unique=True))}
        for name in route_names
    ]
    used = {lane for route in routes for lane in route["lanes"]}
    lanes = {name: lane_object(name, draw(valid_lane_spec())) for name in sorted(used)}
    # An escalation path along the route order can never cycle.
    path = [{"from": a, "to": b} for a, b in itertools.pairwise(route_names)]
    spec: dict[str, Any] = {
        "selector": {},
        "mode": draw(st.sampled_from(["enforce", "observe"])),
        "routes": routes,
        "defaultRoute": draw(st.sampled_from(route_names)),
        "triage": [
            {
                "name": f"rule-{i}",
                "when": draw(conditions),
                "route": draw(st.sampled_from(route_names)),
            }
            for i in range(draw(st.integers(0, 3)))
        ],
        "escalation": {
            "triggers": draw(st.lists(st.sampled_from(ESCALATION_TRIGGERS), unique=True)),
            "maxEscalations": draw(st.integers(0, 5)),
            "path": draw(st.sampled_from([path, []])),
        },
        "fallback": {
            "triggers": draw(st.lists(st.sampled_from(FALLBACK_TRIGGERS), unique=True)),
            "retries": {
                "max": draw(st.integers(0, 10)),
                "backoff": draw(st.sampled_from(DURATIONS)),
            },
        },
        "budget": {"maxCostPerRequest": draw(st.none() | st.floats(0, 10))},
    }
    if "selfCheck" in spec["escalation"]["triggers"]:  # the trigger needs its lane
        spec["escalation"]["selfCheck"] = {"lane": draw(st.sampled_from(sorted(used)))}
    if draw(st.booleans()):
        split = draw(st.integers(1, 4))
        spec["complexity"] = {
            "base": draw(st.integers(1, 5)),
            "signals": [{"name": "s", "when": draw(conditions), "weight": draw(st.floats(-5, 5))}],
            "bands": [
                {"min": 1, "max": split, "route": draw(st.sampled_from(route_names))},
                {"min": split + 1, "max": 5, "route": draw(st.sampled_from(route_names))},
            ],
        }
    policy = {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }
    return policy, lanes


@SETTINGS
@given(valid_inputs())
def test_a_policy_that_follows_every_rule_compiles_to_a_loadable_config(
    inputs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    policy, lanes = inputs
    doc = compile_policy(policy, lanes)
    assert parse_config(json.loads(render_config(doc))).version == doc["version"]


# ---------------------------------------------------------------------------------------------
# Plausible mistakes and junk.


def _mutations(draw: st.DrawFn, spec: dict[str, Any], lanes: dict[str, Any]) -> None:
    """Apply a few of the mistakes users make, in place."""
    choices = st.sampled_from(range(10))
    for choice in draw(st.lists(choices, min_size=1, max_size=3)):
        lane = draw(st.sampled_from(sorted(lanes)))
        lane_spec = lanes[lane]["spec"]
        if choice == 0:
            spec["routes"][0]["lanes"].append(draw(st.sampled_from(["missing", *LANES])))
        elif choice == 1:
            spec["escalation"]["path"] = [
                {"from": draw(st.sampled_from(ROUTES)), "to": draw(st.sampled_from(ROUTES))}
                for _ in range(draw(st.integers(1, 4)))
            ]
        elif choice == 2:
            lane_spec["capabilities"] = draw(st.lists(st.sampled_from([*CAPABILITIES, "audio"])))
        elif choice == 3:
            spec["triage"].append({"name": "t", "when": draw(junk), "route": "fast"})
        elif choice == 4:
            lane_spec["timeouts"] = {"total": draw(st.sampled_from([*DURATIONS, "0s", "5", 5, ""]))}
        elif choice == 5:
            spec["complexity"] = {
                "bands": [
                    {
                        "min": draw(st.integers(-1, 7)),
                        "max": 3,
                        "route": draw(st.sampled_from(ROUTES)),
                    }
                ]
            }
        elif choice == 6:
            lane_spec["limits"]["contextWindow"] = draw(st.integers(-5, 5) | st.none() | junk)
        elif choice == 7:
            spec[draw(st.sampled_from(["mode", "budget", "fallback", "latencyBudgetMs"]))] = draw(
                junk
            )
        elif choice == 8:
            lane_spec["pricing"] = draw(junk)
        else:
            spec["defaultRoute"] = draw(st.sampled_from([*ROUTES, "auto", ""]))


@st.composite
def plausible_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    policy, lanes = draw(valid_inputs())
    _mutations(draw, policy["spec"], lanes)
    return policy, lanes


@SETTINGS
@given(plausible_inputs())
def test_a_policy_with_mistakes_compiles_or_raises_compile_error_only(
    inputs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    policy, lanes = inputs
    try:
        doc = compile_policy(policy, lanes)
    except CompileError as exc:
        assert exc.resource and exc.field and exc.reason.isalpha()
    else:
        parse_config(doc)


@SETTINGS
@given(junk, st.dictionaries(st.sampled_from(LANES), junk, max_size=2))
def test_junk_in_place_of_a_spec_raises_compile_error_only(spec: Any, lanes: Any) -> None:
    policy = {
        "apiVersion": "routing.laneway.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }
    # Any exception but CompileError fails the test.
    with contextlib.suppress(CompileError):
        compile_policy(policy, lanes)
