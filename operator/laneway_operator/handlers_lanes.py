"""kopf handlers for ModelLanes: the lane index, change triggers, and one probe loop per lane.

Registered on import (`main.py` imports this module). Handler ids:

- `lanes_by_namespace` (index): namespace -> the lanes in it, as the compiler needs them;
- `lane-changed` (event): wakes the policies that use a lane when its spec or phase changes or
  it is deleted (not on every status write: probes write `lastProbe` each interval);
- `lane-prober` (daemon): probes the provider every `healthProbe.interval`, each probe bounded
  by `healthProbe.timeout`. Every lane has its own loop, so slow or hanging providers never
  delay the others. The loop writes `status` and posts Events when the phase changes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from laneway_operator.api_keys import KeyUnavailable
from laneway_operator.kube import ApiException, crd_path, describe_error
from laneway_operator.names import GROUP, LANES, VERSION
from laneway_operator.probes import (
    LaneHealth,
    ProbeResult,
    ProbeSettings,
    advance,
    describe,
    missing_secret,
    probe_provider,
)
from laneway_operator.runtime import Runtime, not_deleting
from laneway_operator.status import differs, lane_status, utc_now

log = logging.getLogger(__name__)

# How long a loop may take to finish its step when the lane is deleted or the operator stops.
GRACE_S = 5.0

# Phase changes worth an Event: (type, reason).
_PHASE_EVENTS = {
    "Down": ("Warning", "LaneDown"),
    "Degraded": ("Warning", "LaneDegraded"),
    "Healthy": ("Normal", "LaneHealthy"),
}


def lane_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a ModelLane the compiler reads, as plain data."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation")},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": {"phase": (body.get("status") or {}).get("phase", "Unknown")},
    }


@kopf.index(GROUP, VERSION, LANES, id="lanes_by_namespace", when=not_deleting)
def index_lanes(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {namespace: lane_snapshot(body)}


@kopf.on.event(GROUP, VERSION, LANES, id="lane-changed")
def lane_changed(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    policies_by_lane: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    rt: Runtime = memo.runtime
    key = (namespace, name)
    gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    mark = ("gone", None) if gone else (meta.get("generation"), status.get("phase"))
    if event.get("type") == "DELETED":
        rt.lane_marks.pop(key, None)
        rt.metrics.forget_lane(namespace, name)
    elif rt.lane_marks.get(key) == mark:
        return
    else:
        rt.lane_marks[key] = mark
    for policy in set(policies_by_lane.get(key, [])):
        rt.triggers.fire((namespace, policy))


@kopf.daemon(GROUP, VERSION, LANES, id="lane-prober", when=not_deleting,
             cancellation_backoff=GRACE_S, cancellation_timeout=GRACE_S)
async def run_lane_probes(
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    rt: Runtime = memo.runtime
    # Only this loop writes the lane's status, so what it wrote last is the freshest copy.
    written: dict[str, Any] = dict(body.get("status") or {})
    health = resume_health(written)
    rt.metrics.set_lane_phase(namespace, name, health.phase)
    while not stopped:
        spec = copy.deepcopy(dict(body.get("spec") or {}))
        settings = ProbeSettings.from_spec(spec.get("healthProbe"))
        result = await _probe_once(rt, namespace, name, spec, settings)
        after = advance(health, result.ok, now=time.monotonic(), settings=settings,
                        hold_down_s=rt.tuning.hold_down_s)
        try:
            written = await _record(rt, body, written, (health, after), result, settings)
        except ApiException as exc:
            log.warning("[%s/%s] cannot write lane status: %s; next probe in %gs",
                        namespace, name, describe_error(exc), settings.interval_s)
        health = after
        await stopped.wait(settings.interval_s)


def resume_health(status: Mapping[str, Any]) -> LaneHealth:
    """Where a lane's phase machine stands after an operator restart, from its status.

    A hold-down in progress starts again: restoring traffic later is the safe side.
    """
    return LaneHealth(
        phase=status.get("phase") or "Unknown",
        successes=int(status.get("consecutiveSuccesses") or 0),
        failures=int(status.get("consecutiveFailures") or 0),
    )


async def _probe_once(
    rt: Runtime, namespace: str, name: str, spec: Mapping[str, Any], settings: ProbeSettings
) -> ProbeResult:
    provider = spec.get("provider") or {}
    started = time.monotonic()
    try:
        key = await rt.keys.key_for(namespace, provider.get("apiKeySecretRef"))
    except KeyUnavailable as exc:
        result = missing_secret(str(exc))
    else:
        result = await probe_provider(
            rt.http, provider, key, timeout_s=settings.timeout_s, proxies=rt.proxies
        )
    rt.metrics.probe_duration.labels(namespace, name).observe(time.monotonic() - started)
    rt.metrics.probes.labels(namespace, name, result.result).inc()
    log.debug("[%s/%s] probe %s: %s", namespace, name, result.result, result.message)
    return result


async def _record(
    rt: Runtime,
    body: kopf.Body,
    previous: Mapping[str, Any],
    change: tuple[LaneHealth, LaneHealth],
    result: ProbeResult,
    settings: ProbeSettings,
) -> dict[str, Any]:
    """Write the lane's status and return it; when the phase changed (`change` is before and
    after) also a log line, an Event and the metric."""
    before, after = change
    meta = body.get("metadata") or {}
    namespace, name = meta["namespace"], meta["name"]
    reason, message = describe(after, result, settings=settings,
                               hold_down_s=rt.tuning.hold_down_s, now=time.monotonic())
    now = utc_now()
    status = lane_status(previous, phase=after.phase, reason=reason, message=message,
                         last_probe=result.as_status(now), generation=meta.get("generation"),
                         now=now, runs=(after.successes, after.failures))
    if differs(previous, status):
        await rt.kube.merge_patch(crd_path(LANES, namespace, name, "status"), {"status": status})
    if after.phase != before.phase:
        rt.metrics.set_lane_phase(namespace, name, after.phase)
        _announce(dict(body), before.phase, after.phase, message)
    return status


def _announce(body: Mapping[str, Any], old: str, new: str, message: str) -> None:
    meta = body["metadata"]
    if new == "Down" or old == "Down":
        log.info("[%s/%s] lane %s -> %s: %s", meta["namespace"], meta["name"], old, new, message)
    else:
        log.debug("[%s/%s] lane %s -> %s: %s", meta["namespace"], meta["name"], old, new, message)
    kind, reason = _PHASE_EVENTS.get(new, ("Normal", "LanePhaseChanged"))
    if old == "Down" and new == "Healthy":
        reason = "LaneRestored"
    kopf.event(body, type=kind, reason=reason, message=f"{old} -> {new}: {message}"[:1000])
