"""Status of ModelLanes and RoutingPolicies, shaped as the Kubernetes API conventions describe.

Pure functions: the handlers (`handlers_lanes.py`, `reconcile.py`) pass in what they observed and
the previous status, and write back what these return. Conditions are keyed by `type`; each has a
`status` (True, False, Unknown), a one-word CamelCase `reason`, a human `message`, the
`observedGeneration` it describes, and a `lastTransitionTime` that moves only when `status`
flips, so rewriting the same observation leaves the object untouched.

Condition types and reasons (docs/operator.md explains each):

    ModelLane       Ready, Healthy: ProbeSucceeded, ProbeFailing, ProbeFailed, HoldDown, NotProbed
    RoutingPolicy   Compiled: ConfigWritten or the CompileError reason (LaneNotFound, ...)
                    Ready:    RoutesServing, NoActiveLane, CompileFailed
                    Degraded: PrimaryActive, BackupActive, NoActiveLane, CompileFailed
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from laneway_operator.compiler import active_lanes_summary, route_status

Condition = dict[str, Any]

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def utc_now() -> str:
    """The current time as the API server writes it (RFC 3339, seconds, UTC)."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """A copy of `conditions` with the one of `type_` set; other types keep their place."""
    old = find_condition(conditions, type_)
    since = now
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        since = old["lastTransitionTime"]
    new: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out = [dict(c) if c.get("type") != type_ else new for c in conditions or ()]
    return out if old is not None else [*out, new]


def with_conditions(
    conditions: Sequence[Mapping[str, Any]] | None,
    updates: Sequence[tuple[str, str, str, str]],
    *,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Apply several (type, status, reason, message) updates in order."""
    out = [dict(c) for c in conditions or ()]
    for type_, status, reason, message in updates:
        out = set_condition(
            out,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
    return out


# ---------------------------------------------------------------------------------------------
# RoutingPolicy.


def compiled_policy_status(
    previous: Mapping[str, Any],
    *,
    doc: Mapping[str, Any],
    config_map: str,
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    """Status after a successful compile whose config is stored in `config_map`."""
    routes = route_status(doc)
    ready, degraded = _route_health(routes)
    conditions = with_conditions(
        previous.get("conditions"),
        [
            ("Compiled", TRUE, "ConfigWritten",
             f"config {doc['version']} is stored in ConfigMap {config_map}"),
            ("Ready", *ready),
            ("Degraded", *degraded),
        ],
        generation=generation,
        now=now,
    )
    return {
        "observedGeneration": generation,
        "configVersion": doc["version"],
        "configMap": config_map,
        "routes": routes,
        "activeLanesSummary": active_lanes_summary(doc),
        "conditions": conditions,
    }


def _route_health(routes: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(status, reason, message) for Ready and for Degraded, from `status.routes`."""
    dead = [r["name"] for r in routes if r["activeLane"] is None]
    if dead:
        message = (
            f"every lane of route(s) {', '.join(dead)} is Down; requests for them fail until a "
            "lane recovers"
        )
        return (FALSE, "NoActiveLane", message), (TRUE, "NoActiveLane", message)
    shifted = [
        f"{r['name']} -> {r['activeLane']} (primary {r['lanes'][0]['name']} is Down)"
        for r in routes
        if r["activeLane"] != r["lanes"][0]["name"]
    ]
    serving = (TRUE, "RoutesServing", f"all {len(routes)} route(s) have a lane that is not Down")
    if shifted:
        return serving, (TRUE, "BackupActive", "serving from backup lanes: " + "; ".join(shifted))
    return serving, (FALSE, "PrimaryActive", "every route serves from its primary lane")


def failed_policy_status(
    previous: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    config_map: str,
    generation: int | None,
    now: str,
    ready_reason: str = "CompileFailed",
) -> dict[str, Any]:
    """Status after a compile error, or a config that could not be stored (`ready_reason`
    NameTaken): the last good config (if any) stays where it was."""
    version = previous.get("configVersion")
    if version:
        consequence = (
            f"the last good config {version} stays in ConfigMap {config_map} and sidecars keep "
            "serving it; fix the error to apply this generation"
        )
    else:
        consequence = (
            f"no config has been written yet; pods using this policy wait for ConfigMap "
            f"{config_map}; fix the error to create it"
        )
    conditions = with_conditions(
        previous.get("conditions"),
        [
            ("Compiled", FALSE, reason, message),
            ("Ready", FALSE, ready_reason, consequence),
            ("Degraded", UNKNOWN, ready_reason, "route health is unknown until "
             + ("it compiles" if ready_reason == "CompileFailed" else "its config is written")),
        ],
        generation=generation,
        now=now,
    )
    status: dict[str, Any] = {k: previous[k] for k in _KEPT_ON_FAILURE if k in previous}
    status.update(observedGeneration=generation, conditions=conditions)
    return status


_KEPT_ON_FAILURE = ("configVersion", "configMap", "routes", "activeLanesSummary")


# ---------------------------------------------------------------------------------------------
# ModelLane.

_LANE_CONDITIONS = {
    # phase: (Ready status, Healthy status)
    "Healthy": (TRUE, TRUE),
    "Degraded": (TRUE, FALSE),
    "Down": (FALSE, FALSE),
    "Unknown": (UNKNOWN, UNKNOWN),
}


def lane_status(
    previous: Mapping[str, Any],
    *,
    phase: str,
    reason: str,
    message: str,
    last_probe: Mapping[str, Any] | None,
    generation: int | None,
    now: str,
    runs: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """A ModelLane's status for `phase`; `reason`/`message` explain it on both conditions.

    `runs` is (consecutive successes, consecutive failures) of the probes so far.
    """
    ready, healthy = _LANE_CONDITIONS[phase]
    conditions = with_conditions(
        previous.get("conditions"),
        [("Ready", ready, reason, message), ("Healthy", healthy, reason, message)],
        generation=generation,
        now=now,
    )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "consecutiveSuccesses": runs[0],
        "consecutiveFailures": runs[1],
        "conditions": conditions,
    }
    if last_probe is not None:
        status["lastProbe"] = dict(last_probe)
    return status


def differs(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether writing `wanted` would change any of its keys in `current`."""
    current = current or {}
    return any(current.get(key) != value for key, value in wanted.items())
