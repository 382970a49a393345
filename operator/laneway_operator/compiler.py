"""The policy compiler: one RoutingPolicy and its ModelLanes in, one router config document out.

Called by the operator (on every change to a policy or a lane, and when a lane's phase changes)
and by `laneway compile` / `laneway explain` (offline, on manifest files). It needs no Kubernetes
client. The output is the document `router_sidecar.config.parse_config` reads; every compiled
document is run through `parse_config` before it is returned, so it always loads.

Offline there is no API server to apply the CRD defaults and CEL rules, so the compiler applies the
same defaults (`crds/*.yaml` and `docs/crds.md` list them) and repeats the checks the schema makes,
then adds the ones a schema cannot make: lanes that do not exist, cycles in the escalation path,
tools requests sent to a route without a tools-capable lane, and full `when` condition trees.
Every failure is a `CompileError` that names the resource, the field and the fix.

Same input, same bytes: the document is built field by field (input key order does not matter),
set-like lists (capabilities, triggers) are sorted, numbers that may be written either as `1` or
`1.0` are stored as floats, and `version` is the content hash of the rest.

The work is split by concern; this module is the public entry and re-exports what callers use:
`compile_fields.py` (typed field reads, `CompileError`), `compile_defaults.py` (the CRD
defaults), `compile_lanes.py` (ModelLanes) and `compile_routing.py` (the policy's sections).
Import from here, not from those modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from laneway_operator.compile_defaults import (
    DEFAULT_BREAKER,
    DEFAULT_COMPLEXITY_BASE,
    DEFAULT_FALLBACK_TRIGGERS,
    DEFAULT_LOW_RISK_LEVELS,
    DEFAULT_MAX_ESCALATIONS,
    DEFAULT_PROBE,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_BUDGET_PERCENT,
    DEFAULT_TIMEOUTS,
)
from laneway_operator.compile_fields import CR_API_VERSION, GROUP, CompileError, FieldReader
from laneway_operator.compile_lanes import compile_lane, compile_route_lanes
from laneway_operator.compile_routing import (
    MAX_CONDITION_DEPTH,
    check_tools_routes,
    compile_budget,
    compile_complexity,
    compile_escalation,
    compile_fallback,
    compile_routes,
    compile_triage,
    route_ref,
)
from router_sidecar.config import (
    API_VERSION,
    KIND,
    MODES,
    ConfigError,
    content_version,
    parse_config,
)

__all__ = [
    "CR_API_VERSION",
    "DEFAULT_BREAKER",
    "DEFAULT_COMPLEXITY_BASE",
    "DEFAULT_FALLBACK_TRIGGERS",
    "DEFAULT_LOW_RISK_LEVELS",
    "DEFAULT_MAX_ESCALATIONS",
    "DEFAULT_PROBE",
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_BUDGET_PERCENT",
    "DEFAULT_TIMEOUTS",
    "GROUP",
    "MAX_CONDITION_DEPTH",
    "SUMMARY_MAX_CHARS",
    "CompileError",
    "active_lanes",
    "active_lanes_summary",
    "compile_lane",
    "compile_policy",
    "referenced_lanes",
    "render_config",
    "route_status",
]

SUMMARY_MAX_CHARS = 1024


def compile_policy(
    policy: Mapping[str, Any],
    lanes: Mapping[str, Mapping[str, Any]],
    lane_phases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Compile a RoutingPolicy and the ModelLanes of its namespace into a router config.

    `lanes` maps ModelLane names to objects; only those the policy references are used.
    `lane_phases` (name -> phase) overrides each lane's `status.phase`; a lane with neither is
    `Unknown`. Raises CompileError for anything that would not make a loadable config.
    """
    name, namespace = _identity(policy)
    r = FieldReader(f"RoutingPolicy {namespace}/{name}")
    r.check_kind(policy, "RoutingPolicy")
    spec = r.get(policy, "spec", "", "an object")
    r.get(spec, "selector", "spec", "an object")  # used by the operator, not by the router
    routes = compile_routes(r, spec)
    route_names = [route["name"] for route in routes]
    lane_docs = compile_route_lanes(r, routes, lanes, lane_phases, namespace)
    triage = compile_triage(r, spec, route_names)
    check_tools_routes(r, triage, routes, lane_docs)

    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "policy": {"name": name, "namespace": namespace},
        "mode": r.choice(spec, "mode", "spec", MODES, "enforce"),
        "defaultRoute": route_ref(r, spec, "defaultRoute", "spec", route_names),
        "latencyBudgetMs": r.number(
            spec, "latencyBudgetMs", "spec", low=1, default=None, integer=True
        ),
        "budget": compile_budget(r, spec),
        "lanes": lane_docs,
        "routes": routes,
        "triage": triage,
        "complexity": compile_complexity(r, spec, route_names),
        "escalation": compile_escalation(r, spec, route_names, list(lane_docs)),
        "fallback": compile_fallback(r, spec),
    }
    doc["version"] = content_version(doc)

    # The sidecar's own validation is the last word: a compiled document must always load.
    try:
        parse_config(doc)
    except ConfigError as exc:
        r.fail(
            "spec",
            f"the compiled config would not load ({exc}); please report this",
            "InvalidConfig",
        )
    return doc


def render_config(doc: Mapping[str, Any]) -> str:
    """The config as deterministic text: JSON, sorted keys, two-space indent, final newline.

    Indented rather than one line so that GitOps diffs and `kubectl get configmap` stay readable;
    the content hash (`version`) is computed on the compact canonical form, not on this text.
    """
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def referenced_lanes(policy: Mapping[str, Any]) -> list[str]:
    """ModelLane names a policy's routes use, in order of first use; tolerant of bad specs."""
    spec = policy.get("spec")
    routes = spec.get("routes") if isinstance(spec, Mapping) else None
    names: list[str] = []
    for route in routes if isinstance(routes, list) else []:
        lanes = route.get("lanes") if isinstance(route, Mapping) else None
        for lane in lanes if isinstance(lanes, list) else []:
            if isinstance(lane, str) and lane not in names:
                names.append(lane)
    return names


def active_lanes(doc: Mapping[str, Any]) -> dict[str, str | None]:
    """Per route, the first lane that is not `Down` (None when every lane is down)."""
    phases = {name: lane.get("phase", "Unknown") for name, lane in doc["lanes"].items()}
    return {
        route["name"]: next((lane for lane in route["lanes"] if phases.get(lane) != "Down"), None)
        for route in doc["routes"]
    }


def route_status(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`status.routes` of a RoutingPolicy: each route's active lane and every lane's phase."""
    active = active_lanes(doc)
    return [
        {
            "name": route["name"],
            "activeLane": active[route["name"]],
            "lanes": [
                {"name": lane, "phase": doc["lanes"][lane].get("phase", "Unknown")}
                for lane in route["lanes"]
            ],
        }
        for route in doc["routes"]
    ]


def active_lanes_summary(doc: Mapping[str, Any]) -> str:
    """`status.activeLanesSummary`, e.g. "fast=fast-mini strong=strong-backup premium=-"."""
    text = " ".join(f"{route}={lane or '-'}" for route, lane in active_lanes(doc).items())
    return text if len(text) <= SUMMARY_MAX_CHARS else text[: SUMMARY_MAX_CHARS - 3] + "..."


def _identity(obj: Mapping[str, Any]) -> tuple[str, str]:
    """A policy's name and namespace ("default" when absent), read before anything else."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        raise CompileError("RoutingPolicy", "metadata.name", "is required; name the policy")
    if not isinstance(namespace, str):
        raise CompileError(f"RoutingPolicy {name}", "metadata.namespace", "must be a string")
    return name, namespace
