"""ModelLane compilation: each lane a policy's routes name becomes one `lanes.<name>` entry.

Called by `compiler.compile_policy` (through `compile_route_lanes`); `compile_lane` is also
re-exported by `compiler.py` for callers that compile a single lane. Provider, pricing, limits,
capabilities and timeouts are copied into the router config; API keys stay Secret references,
never values. The health probe is not part of the router config (the operator's prober reads it
from the lane itself) but is checked here as the CRD would, so offline compiles catch it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from laneway_operator.compile_defaults import DEFAULT_PROBE, DEFAULT_TIMEOUTS
from laneway_operator.compile_fields import FieldReader
from router_sidecar.config import CAPABILITIES, LANE_PHASES, PROVIDER_TYPES


def compile_route_lanes(
    r: FieldReader,
    routes: list[dict[str, Any]],
    lanes: Mapping[str, Mapping[str, Any]],
    lane_phases: Mapping[str, str] | None,
    namespace: str,
) -> dict[str, dict[str, Any]]:
    """Compile every lane the routes name; a missing one fails at the route that names it."""
    out: dict[str, dict[str, Any]] = {}
    for i, route in enumerate(routes):
        for j, name in enumerate(route["lanes"]):
            if name in out:
                continue
            if name not in lanes:
                known = ", ".join(sorted(lanes)) or "none"
                r.fail(
                    f"spec.routes[{i}].lanes[{j}]",
                    f"ModelLane {name!r} does not exist in namespace {namespace}; create it or "
                    f"remove it from route {route['name']!r} (existing lanes: {known})",
                    "LaneNotFound",
                )
            out[name] = compile_lane(
                name, namespace, lanes[name], _phase(name, lanes[name], lane_phases)
            )
    return out


def _phase(name: str, lane: Mapping[str, Any], lane_phases: Mapping[str, str] | None) -> str:
    if lane_phases is not None:
        phase = lane_phases.get(name)
    else:
        status = lane.get("status") if isinstance(lane, Mapping) else None
        phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase if phase in LANE_PHASES else "Unknown"


def compile_lane(name: str, namespace: str, lane: Mapping[str, Any], phase: str) -> dict[str, Any]:
    """One ModelLane as a `lanes.<name>` entry of the config. Secrets stay references."""
    r = FieldReader(f"ModelLane {namespace}/{name}")
    if not isinstance(lane, Mapping):
        r.fail("", "must be a ModelLane object")
    r.check_kind(lane, "ModelLane")
    spec = r.get(lane, "spec", "", "an object")
    pricing = r.get(spec, "pricing", "spec", "an object")
    compiled = {
        "provider": _provider(r, r.get(spec, "provider", "spec", "an object")),
        "pricing": {
            key: r.number(pricing, key, "spec.pricing", low=0)
            for key in ("inputPerMillion", "outputPerMillion")
        },
        "limits": _limits(r, r.get(spec, "limits", "spec", "an object")),
        "capabilities": r.choices(spec, "capabilities", "spec", CAPABILITIES, []),
        "timeouts": _timeouts(r, r.get(spec, "timeouts", "spec", "an object", {})),
        "phase": phase,
    }
    _check_health_probe(r, r.get(spec, "healthProbe", "spec", "an object", {}))
    return compiled


def _check_health_probe(r: FieldReader, probe: Mapping[str, Any]) -> None:
    """The operator's probe settings: not in the router config, but checked like the CRD does."""
    path = "spec.healthProbe"
    interval = r.duration(probe, "interval", path, DEFAULT_PROBE["interval"])
    if interval < 1_000:
        r.fail(f"{path}.interval", "must be a duration of at least 1s, such as 10s or 1m")
    if r.duration(probe, "timeout", path, DEFAULT_PROBE["timeout"]) > interval:
        r.fail(f"{path}.timeout", "must not be longer than interval")
    for key in ("failureThreshold", "successThreshold"):
        r.number(probe, key, path, low=1, high=100, integer=True, default=DEFAULT_PROBE[key])


def _provider(r: FieldReader, prov: Mapping[str, Any]) -> dict[str, Any]:
    path = "spec.provider"
    base_url = r.text(prov, "baseURL", path)
    if not base_url.startswith(("http://", "https://")):
        r.fail(f"{path}.baseURL", f"must start with http:// or https://, got {base_url!r:.80}")
    out = {
        "type": r.choice(prov, "type", path, PROVIDER_TYPES),
        "baseURL": base_url,
        "model": r.text(prov, "model", path),
    }
    ref = r.get(prov, "apiKeySecretRef", path, "an object", None)
    if ref is not None:
        rpath = f"{path}.apiKeySecretRef"
        out["apiKeySecretRef"] = {
            "name": r.text(ref, "name", rpath),
            "key": r.text(ref, "key", rpath),
        }
    return out


def _limits(r: FieldReader, limits: Mapping[str, Any]) -> dict[str, int]:
    ctx = r.number(limits, "contextWindow", "spec.limits", low=1, integer=True)
    max_out = r.number(limits, "maxOutputTokens", "spec.limits", low=1, integer=True)
    if ctx < max_out:
        r.fail(
            "spec.limits.contextWindow", f"must be at least maxOutputTokens ({max_out}), got {ctx}"
        )
    return {"contextWindow": ctx, "maxOutputTokens": max_out}


def _timeouts(r: FieldReader, timeouts: Mapping[str, Any]) -> dict[str, int]:
    path = "spec.timeouts"
    ms = {key: r.duration(timeouts, key, path, dflt) for key, dflt in DEFAULT_TIMEOUTS.items()}
    for key in ("connect", "firstToken"):
        if ms[key] > ms["total"]:
            r.fail(f"{path}.{key}", f"must not be longer than {path}.total")
    return {"connectMs": ms["connect"], "firstTokenMs": ms["firstToken"], "totalMs": ms["total"]}
