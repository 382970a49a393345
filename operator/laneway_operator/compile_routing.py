"""RoutingPolicy compilation: routes, triage rules, complexity, escalation, fallback and budget.

Called by `compiler.compile_policy`, one function per top-level section of the policy spec, each
returning that section of the router config. Besides the checks the CRD schema and its CEL rules
make (repeated here for offline compiles), this module makes those no schema can: routes named
but not defined, escalation paths with a cycle, `when` condition trees checked in full (through
the sidecar's own `validate_condition`), and `hasTools` rules sent to a route with no tools lane.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from laneway_operator.compile_defaults import (
    DEFAULT_BREAKER,
    DEFAULT_COMPLEXITY_BASE,
    DEFAULT_FALLBACK_TRIGGERS,
    DEFAULT_LOW_RISK_LEVELS,
    DEFAULT_MAX_ESCALATIONS,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_BUDGET_PERCENT,
)
from laneway_operator.compile_fields import REQUIRED, FieldReader
from router_sidecar.config import (
    BUDGET_ACTIONS,
    ESCALATION_TRIGGERS,
    FALLBACK_TRIGGERS,
    ConfigError,
    validate_condition,
)

# How deep allOf/anyOf/not may nest in a `when` tree.
MAX_CONDITION_DEPTH = 8
# Route names are lowercase DNS labels.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def compile_routes(r: FieldReader, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`spec.routes`: at least one, unique DNS-label names, each with its own lanes in order."""
    items = r.items(spec, "routes", "spec")
    if not items:
        r.fail(
            "spec.routes",
            "must hold at least one route, e.g. {name: fast, lanes: [my-lane]}",
            "MissingField",
        )
    routes: list[dict[str, Any]] = []
    for path, item in items:
        name = r.text(item, "name", path)
        if name == "auto" or not _DNS_LABEL.fullmatch(name):
            r.fail(
                f"{path}.name",
                f"must be a lowercase DNS label such as fast or strong-backup, and not auto "
                f"(a request's model 'auto' asks for triage), got {name!r:.70}",
            )
        if any(route["name"] == name for route in routes):
            r.fail(
                f"{path}.name",
                f"route {name!r} is defined twice; route names must be unique",
                "DuplicateRoute",
            )
        lanes = r.strings(item, "lanes", path, REQUIRED)
        if not lanes:
            r.fail(
                f"{path}.lanes",
                "must list at least one ModelLane (primary first, then backups)",
                "MissingField",
            )
        for j, lane in enumerate(lanes):
            if lane in lanes[:j]:
                r.fail(
                    f"{path}.lanes[{j}]",
                    f"lane {lane!r} is listed twice in this route; remove the duplicate",
                    "DuplicateLane",
                )
        routes.append({"name": name, "lanes": lanes})
    return routes


def route_ref(
    r: FieldReader, obj: Mapping[str, Any], key: str, path: str, route_names: list[str]
) -> str:
    """`obj[key]`, which must name a route of `spec.routes`."""
    value = r.text(obj, key, path)
    if value not in route_names:
        r.fail(
            f"{path}.{key}",
            f"route {value!r} is not defined; use one of {', '.join(route_names)} (spec.routes)",
            "RouteNotFound",
        )
    return value


def _condition(r: FieldReader, obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A validated deep copy of `obj.when`."""
    when = r.get(obj, "when", path, "an object")
    # Each allOf/anyOf level is an object and a list; `not` is one object; the leaf one more.
    if _deeper_than(when, 2 * MAX_CONDITION_DEPTH + 1):
        r.fail(
            f"{path}.when",
            f"must nest allOf/anyOf/not at most {MAX_CONDITION_DEPTH} deep; flatten the condition",
            "InvalidCondition",
        )
    try:
        validate_condition(when, f"{path}.when")
    except ConfigError as exc:
        field, _, message = str(exc).partition(": ")
        r.fail(field, message, "InvalidCondition")
    return json.loads(json.dumps(when))


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether objects and lists nest more than `levels` deep (without recursing further)."""
    if not isinstance(value, dict | list):
        return False
    if levels <= 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(_deeper_than(child, levels - 1) for child in children)


def _unique_name(r: FieldReader, item: Mapping[str, Any], path: str, seen: set[str]) -> str:
    name = r.text(item, "name", path)
    if name in seen:
        r.fail(f"{path}.name", f"{name!r} is used twice; names must be unique", "DuplicateName")
    seen.add(name)
    return name


def compile_triage(
    r: FieldReader, spec: Mapping[str, Any], route_names: list[str]
) -> list[dict[str, Any]]:
    """`spec.triage`: named rules, each a `when` condition and the route it picks."""
    seen: set[str] = set()
    return [
        {
            "name": _unique_name(r, item, path, seen),
            "when": _condition(r, item, path),
            "route": route_ref(r, item, "route", path, route_names),
        }
        for path, item in r.items(spec, "triage", "spec")
    ]


def compile_complexity(
    r: FieldReader, spec: Mapping[str, Any], route_names: list[str]
) -> dict[str, Any]:
    """`spec.complexity`: the base score, weighted signals, and bands covering scores 1 to 5."""
    path = "spec.complexity"
    obj = r.get(spec, "complexity", "spec", "an object", {})
    seen: set[str] = set()
    signals = [
        {
            "name": _unique_name(r, item, spath, seen),
            "when": _condition(r, item, spath),
            "weight": r.number(item, "weight", spath, low=-5, high=5),
        }
        for spath, item in r.items(obj, "signals", path)
    ]
    bands = []
    for bpath, item in r.items(obj, "bands", path):
        low = r.number(item, "min", bpath, low=1, high=5, integer=True)
        high = r.number(item, "max", bpath, low=1, high=5, integer=True)
        if low > high:
            r.fail(f"{bpath}.max", f"must be at least min ({low}), got {high}")
        bands.append(
            {"min": low, "max": high, "route": route_ref(r, item, "route", bpath, route_names)}
        )
    scores = sorted(s for band in bands for s in range(band["min"], band["max"] + 1))
    if bands and scores != [1, 2, 3, 4, 5]:
        r.fail(
            f"{path}.bands",
            "must map every score from 1 to 5 to exactly one band, e.g. "
            "1-2 fast, 3-4 strong, 5-5 premium",
            "InvalidBands",
        )
    return {
        "base": r.number(obj, "base", path, low=1, high=5, default=DEFAULT_COMPLEXITY_BASE),
        "signals": signals,
        "bands": bands,
    }


def compile_escalation(
    r: FieldReader, spec: Mapping[str, Any], route_names: list[str], lane_names: list[str]
) -> dict[str, Any]:
    """`spec.escalation`: triggers, limits, a path from route to route without cycles, and the
    lane that self-checks answers (one of the routes' lanes)."""
    path = "spec.escalation"
    obj = r.get(spec, "escalation", "spec", "an object", {})
    triggers = r.choices(obj, "triggers", path, ESCALATION_TRIGGERS, [])
    out = {
        "triggers": triggers,
        "uncertaintyMarkers": r.strings(obj, "uncertaintyMarkers", path, []),
        "maxEscalations": r.number(
            obj,
            "maxEscalations",
            path,
            low=0,
            high=5,
            integer=True,
            default=DEFAULT_MAX_ESCALATIONS,
        ),
        "toolFailureThreshold": r.number(
            obj, "toolFailureThreshold", path, low=1, integer=True, default=0
        ),
        "lowRiskLevels": sorted(
            set(r.strings(obj, "lowRiskLevels", path, list(DEFAULT_LOW_RISK_LEVELS)))
        ),
        "path": _escalation_path(r, obj, route_names),
    }
    check = _self_check(r, obj, path, lane_names)
    if check is not None:
        out["selfCheck"] = check
    elif "selfCheck" in triggers:
        r.fail(f"{path}.selfCheck", "must name selfCheck.lane, the lane that checks the "
               "answers, when selfCheck is a trigger", "MissingField")
    return out


def _self_check(
    r: FieldReader, obj: Mapping[str, Any], path: str, lane_names: list[str]
) -> dict[str, Any] | None:
    check = r.get(obj, "selfCheck", path, "an object", None)
    if check is None:
        return None
    cpath = f"{path}.selfCheck"
    lane = r.text(check, "lane", cpath)
    if lane not in lane_names:
        r.fail(f"{cpath}.lane", f"{lane!r} is not a lane of this policy's routes; use one of "
               f"{', '.join(lane_names)}", "UnknownLane")
    return {
        "lane": lane,
        "instructions": r.get(check, "instructions", cpath, "a string", ""),
        "maxTokens": r.number(check, "maxTokens", cpath, low=16, high=4096, integer=True,
                              default=128),
    }


def _escalation_path(
    r: FieldReader, obj: Mapping[str, Any], route_names: list[str]
) -> dict[str, str]:
    steps: dict[str, str] = {}
    for spath, item in r.items(obj, "path", "spec.escalation"):
        src = route_ref(r, item, "from", spath, route_names)
        dst = route_ref(r, item, "to", spath, route_names)
        if src in steps:
            r.fail(
                f"{spath}.from",
                f"route {src!r} already escalates to {steps[src]!r}; a route "
                "can escalate to one route only",
                "DuplicateEscalationStep",
            )
        steps[src] = dst
    for start in sorted(steps):
        chain = [start]
        while chain[-1] in steps:
            chain.append(steps[chain[-1]])
            if chain[-1] in chain[:-1]:
                cycle = " -> ".join(chain[chain.index(chain[-1]) :])
                r.fail(
                    "spec.escalation.path",
                    f"escalation path has a cycle ({cycle}); remove "
                    "one of these steps so escalation always ends",
                    "EscalationCycle",
                )
    return steps


def compile_fallback(r: FieldReader, spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec.fallback`: triggers, retries, the retry budget and the circuit breaker."""
    path = "spec.fallback"
    obj = r.get(spec, "fallback", "spec", "an object", {})
    retries = r.get(obj, "retries", path, "an object", {})
    breaker = r.get(obj, "circuitBreaker", path, "an object", {})
    rpath, bpath = f"{path}.retries", f"{path}.circuitBreaker"
    return {
        "triggers": r.choices(
            obj, "triggers", path, FALLBACK_TRIGGERS, list(DEFAULT_FALLBACK_TRIGGERS)
        ),
        "retries": {
            "max": r.number(
                retries, "max", rpath, low=0, high=10, integer=True, default=DEFAULT_RETRIES["max"]
            ),
            "backoffMs": r.duration(retries, "backoff", rpath, DEFAULT_RETRIES["backoff"]),
        },
        "retryBudgetPercent": r.number(
            obj, "retryBudgetPercent", path, low=0, high=100, default=DEFAULT_RETRY_BUDGET_PERCENT
        ),
        "circuitBreaker": {
            "consecutiveFailures": r.number(
                breaker,
                "consecutiveFailures",
                bpath,
                low=1,
                integer=True,
                default=DEFAULT_BREAKER["consecutiveFailures"],
            ),
            "cooldownMs": r.duration(breaker, "cooldown", bpath, DEFAULT_BREAKER["cooldown"]),
        },
    }


def compile_budget(r: FieldReader, spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec.budget`: the per-request cost cap and what to do when it would be exceeded."""
    obj = r.get(spec, "budget", "spec", "an object", {})
    return {
        "maxCostPerRequest": r.number(obj, "maxCostPerRequest", "spec.budget", low=0, default=None),
        "onExceed": r.choice(obj, "onExceed", "spec.budget", BUDGET_ACTIONS, "skipLane"),
    }


def check_tools_routes(
    r: FieldReader,
    triage: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    lanes: Mapping[str, Any],
) -> None:
    """A rule that sends `hasTools: true` requests to a route needs a tools-capable lane there."""
    lanes_of = {route["name"]: route["lanes"] for route in routes}
    for i, rule in enumerate(triage):
        route_lanes = lanes_of[rule["route"]]
        if not _matches_tools(rule["when"]):
            continue
        if not any("tools" in lanes[lane]["capabilities"] for lane in route_lanes):
            r.fail(
                f"spec.triage[{i}].route",
                f"rule {rule['name']!r} sends requests with tools to route {rule['route']!r}, "
                f"but none of its lanes ({', '.join(route_lanes)}) lists `tools` in "
                "spec.capabilities; add the capability to a lane or route these requests "
                "elsewhere",
                "NoToolsLane",
            )


def _matches_tools(when: Mapping[str, Any], positive: bool = True) -> bool:
    """Whether the tree asks for `hasTools: true` (under an even number of `not`s)."""
    for key, value in when.items():
        if key == "hasTools" and value is positive:
            return True
        if key in ("allOf", "anyOf") and any(_matches_tools(c, positive) for c in value):
            return True
        if key == "not" and _matches_tools(value, not positive):
            return True
    return False
