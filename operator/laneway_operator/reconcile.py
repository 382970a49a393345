"""One reconcile of one RoutingPolicy: compile, write the ConfigMap and access, report.

Called by the policy loop in `handlers_policies.py` whenever the policy, one of its lanes, or one
of its pods changed, and on a slow resync. Steps:

1. compile the policy with the ModelLanes of its namespace, each at its current phase (a lane
   that is `Down` is skipped by every route, so the next lane of the route becomes active);
2. on a CompileError: conditions say why, a Warning Event says it once, nothing else changes
   (the last good ConfigMap stays and sidecars keep serving it); no retry until an input
   changes, because retrying cannot fix a bad spec;
3. otherwise write the Role and RoleBinding that let the policy's pods read the ConfigMap, the
   ConfigMap (only when its text changed), then the status; Events for a new config version and
   for each route whose active lane moved. When one of those names is taken by an object
   Laneway did not make (`kube.NameTaken`), it is left alone and reported like a compile error
   (nothing of this generation is written: the ConfigMap comes last); the next change or
   resync tries again.

API errors propagate to the caller, which retries with a delay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from laneway_operator.access import ensure_config_access
from laneway_operator.compiler import CompileError, compile_policy, render_config
from laneway_operator.configmaps import ensure_config_map
from laneway_operator.kube import NameTaken, crd_path
from laneway_operator.names import POLICIES, config_map_name
from laneway_operator.runtime import Runtime
from laneway_operator.status import (
    compiled_policy_status,
    differs,
    failed_policy_status,
    find_condition,
    utc_now,
)

log = logging.getLogger(__name__)

KIND = "RoutingPolicy"


async def reconcile_policy(
    rt: Runtime,
    policy: Mapping[str, Any],
    lanes: Mapping[str, Mapping[str, Any]],
    accounts: Sequence[str],
    previous: Mapping[str, Any],
) -> dict[str, Any]:
    """Bring the policy's ConfigMap, access and status in line with its spec and lanes.

    `previous` is the status as last written (the watch may not have delivered it yet); the
    return value is the status now in place.
    """
    meta = policy["metadata"]
    phases = {name: (lane.get("status") or {}).get("phase", "Unknown")
              for name, lane in lanes.items()}
    try:
        doc = compile_policy(policy, lanes, phases)
    except CompileError as err:
        rt.metrics.reconciles.labels(KIND, "compile_error").inc()
        return await _report_failure(rt, policy, previous, err)

    text = render_config(doc)
    try:
        # Access first: when a name is taken, nothing of this generation has been written.
        await ensure_config_access(rt.kube, policy, accounts)
        written = await ensure_config_map(rt.kube, policy, text, doc["version"])
    except NameTaken as err:
        rt.metrics.reconciles.labels(KIND, "name_taken").inc()
        return await _report_failure(rt, policy, previous, err)
    rt.bound_accounts[(meta["namespace"], meta["name"])] = frozenset(accounts)
    status = compiled_policy_status(
        previous,
        doc=doc,
        config_map=config_map_name(meta["name"]),
        generation=meta.get("generation"),
        now=utc_now(),
    )
    await _write_status(rt, policy, previous, status)
    _report_success(rt, policy, previous, status, written)
    rt.metrics.reconciles.labels(KIND, "ok").inc()
    return status


async def _write_status(
    rt: Runtime, policy: Mapping[str, Any], previous: Mapping[str, Any], status: dict[str, Any]
) -> None:
    if not differs(previous, status):
        return
    meta = policy["metadata"]
    path = crd_path(POLICIES, meta["namespace"], meta["name"], "status")
    await rt.kube.merge_patch(path, {"status": status})


async def _report_failure(
    rt: Runtime,
    policy: Mapping[str, Any],
    previous: Mapping[str, Any],
    err: CompileError | NameTaken,
) -> dict[str, Any]:
    meta = policy["metadata"]
    message = str(err)
    compiled = isinstance(err, NameTaken)  # it compiled; writing its config was refused
    reason = err.reason if compiled else "CompileFailed"
    status = failed_policy_status(
        previous,
        reason=err.reason,
        message=message,
        config_map=config_map_name(meta["name"]),
        generation=meta.get("generation"),
        now=utc_now(),
        ready_reason=reason,
    )
    await _write_status(rt, policy, previous, status)
    before = find_condition(previous.get("conditions"), "Compiled") or {}
    if (before.get("status"), before.get("reason"), before.get("message")) == (
        "False", err.reason, message
    ):
        return status  # already reported; a resync or a restart does not repeat it
    what = "cannot write the config" if compiled else "compile failed"
    log.warning("[%s/%s] %s (%s): %s; the last good config stays in place",
                meta["namespace"], meta["name"], what, err.reason, message)
    kopf.event(policy, type="Warning", reason=reason, message=_event_text(message))
    return status


def _report_success(
    rt: Runtime,
    policy: Mapping[str, Any],
    previous: Mapping[str, Any],
    status: Mapping[str, Any],
    written: str,
) -> None:
    meta = policy["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if written != "unchanged" and status["configVersion"] != previous.get("configVersion"):
        rt.metrics.config_writes.labels(ns, name).inc()
        log.info("[%s/%s] config %s written to ConfigMap %s",
                 ns, name, status["configVersion"], status["configMap"])
        kopf.event(policy, type="Normal", reason="ConfigUpdated",
                   message=f"config {status['configVersion']} written to ConfigMap "
                   f"{status['configMap']}")
    for reason, route, message in route_shifts(previous.get("routes"), status["routes"]):
        rt.metrics.route_shifts.labels(ns, name, route).inc()
        log.info("[%s/%s] %s", ns, name, message)
        kind = "Normal" if reason == "RouteRestored" else "Warning"
        kopf.event(policy, type=kind, reason=reason, message=message)


def route_shifts(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """(reason, route, message) for each route whose active lane moved since `before`.

    A policy seen for the first time (no `before`) reports nothing: nothing moved.
    """
    if not before:
        return []
    old = {r["name"]: r.get("activeLane") for r in before}
    shifts = []
    for route in after:
        name, lane = route["name"], route["activeLane"]
        if name not in old or old[name] == lane:
            continue
        phases = {item["name"]: item["phase"] for item in route["lanes"]}
        primary = route["lanes"][0]["name"]
        down = [n for n, phase in phases.items() if phase == "Down"]
        why = f" ({', '.join(down)} Down)" if down else ""
        if lane is None:
            shifts.append(("RouteUnavailable", name,
                           f"route {name}: every lane is Down, requests for it fail until one "
                           f"recovers{why}"))
        elif lane == primary:
            was = old[name] or "none"
            shifts.append(("RouteRestored", name,
                           f"route {name}: back on primary lane {lane} (was {was})"))
        else:
            shifts.append(("RouteShifted", name,
                           f"route {name}: moved from {old[name] or 'none'} to {lane}{why}"))
    return shifts


def _event_text(message: str) -> str:
    """Event messages are limited in size; keep the start, which names the field."""
    return message if len(message) <= 1000 else message[:997] + "..."
