"""The policy compiler: one RoutingPolicy and its ModelLanes in, one router config document out.

Called by the operator (on every change to a policy or a lane, and when a lane's phase changes)
and by `laneway compile` / `laneway explain` (offline, on manifest files). It needs no Kubernetes
client. The output is the document `router_sidecar.config.parse_config` reads; every compiled
document is run through `parse_config` before it is returned, so it always loads.

Offline there is no API server to apply the CRD defaults and CEL rules, so this module applies the
same defaults (`crds/*.yaml` and `docs/crds.md` list them) and repeats the checks the schema makes,
then adds the ones a schema cannot make: lanes that do not exist, cycles in the escalation path,
tools requests sent to a route without a tools-capable lane, and full `when` condition trees.
Every failure is a `CompileError` that names the resource, the field and the fix.

Same input, same bytes: the document is built field by field (input key order does not matter),
set-like lists (capabilities, triggers) are sorted, numbers that may be written either as `1` or
`1.0` are stored as floats, and `version` is the content hash of the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from laneway_operator.durations import parse_duration
from router_sidecar.config import (
    API_VERSION,
    BUDGET_ACTIONS,
    CAPABILITIES,
    ESCALATION_TRIGGERS,
    FALLBACK_TRIGGERS,
    KIND,
    LANE_PHASES,
    MODES,
    PROVIDER_TYPES,
    ConfigError,
    content_version,
    parse_config,
    validate_condition,
)

GROUP = "routing.laneway.dev"
CR_API_VERSION = f"{GROUP}/v1alpha1"

# Defaults, the same as the CRD schemas' `default:` values (a unit test keeps them in step).
DEFAULT_TIMEOUTS = {"connect": "5s", "firstToken": "30s", "total": "120s"}
DEFAULT_PROBE = {"interval": "10s", "timeout": "3s", "failureThreshold": 3, "successThreshold": 2}
DEFAULT_FALLBACK_TRIGGERS = (
    "rateLimited",
    "timeout",
    "serverError",
    "connectionError",
    "contextOverflow",
)
DEFAULT_RETRIES = {"max": 1, "backoff": "200ms"}
DEFAULT_BREAKER = {"consecutiveFailures": 5, "cooldown": "30s"}
DEFAULT_RETRY_BUDGET_PERCENT = 20.0
DEFAULT_MAX_ESCALATIONS = 1
DEFAULT_LOW_RISK_LEVELS = ("low",)
DEFAULT_COMPLEXITY_BASE = 1.0
MAX_CONDITION_DEPTH = 8
SUMMARY_MAX_CHARS = 1024

_MISSING = object()
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_KINDS: dict[str, tuple[type, ...]] = {
    "an object": (dict,),
    "a list": (list,),
    "a string": (str,),
    "an integer": (int,),
    "a number": (int, float),
    "true or false": (bool,),
}


class CompileError(Exception):
    """A policy or lane that cannot be compiled.

    `resource` is e.g. "RoutingPolicy team-a/support-bot", `field` a dotted path such as
    "spec.routes[1].lanes[0]", `reason` one CamelCase word for status conditions and Events.
    """

    def __init__(self, resource: str, field: str, message: str, reason: str = "InvalidSpec"):
        self.resource = resource
        self.field = field
        self.message = message
        self.reason = reason
        super().__init__(f"{resource}: {field}: {message}")


class _Reader:
    """Typed reads from one resource; every failure names the resource and the field."""

    def __init__(self, resource: str):
        self.resource = resource

    def fail(self, field: str, message: str, reason: str = "InvalidField") -> NoReturn:
        raise CompileError(self.resource, field, message, reason)

    def get(
        self, obj: Mapping[str, Any], key: str, path: str, kind: str, default: Any = _MISSING
    ) -> Any:
        """`obj[key]` checked against `kind` (a key of `_KINDS`); `default` when absent."""
        field = f"{path}.{key}" if path else key
        value = obj.get(key)
        if value is None:
            if default is _MISSING:
                self.fail(
                    field, "is required; add it (docs/crds.md lists every field)", "MissingField"
                )
            return default
        # bool is an int in Python; numeric fields must not accept true/false.
        numeric = kind in ("an integer", "a number")
        if (numeric and isinstance(value, bool)) or not isinstance(value, _KINDS[kind]):
            self.fail(field, f"must be {kind}, got {type(value).__name__} {value!r:.40}")
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        low: float,
        high: float | None = None,
        default: Any = _MISSING,
        integer: bool = False,
    ) -> Any:
        """A number (or integer) within [low, high]; floats are normalised for stable bytes."""
        value = self.get(obj, key, path, "an integer" if integer else "a number", default)
        if obj.get(key) is None:
            return value  # the default, used as given
        if value < low or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            self.fail(f"{path}.{key}", f"must be {bounds}, got {value}")
        return int(value) if integer else float(value)

    def text(self, obj: Mapping[str, Any], key: str, path: str, default: Any = _MISSING) -> Any:
        """A non-empty string."""
        value = self.get(obj, key, path, "a string", default)
        if value is not None and not value.strip():
            self.fail(f"{path}.{key}", "must not be empty")
        return value

    def choice(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: Any = _MISSING,
    ) -> Any:
        value = self.get(obj, key, path, "a string", default)
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def choices(
        self, obj: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...], default: Any
    ) -> list[str]:
        """A set of enum strings, returned sorted and without duplicates."""
        values = self.get(obj, key, path, "a list", default)
        for i, value in enumerate(values):
            if value not in allowed:
                self.fail(
                    f"{path}.{key}[{i}]", f"must be one of {', '.join(allowed)}, got {value!r:.60}"
                )
        return sorted(set(values))

    def strings(self, obj: Mapping[str, Any], key: str, path: str, default: Any) -> list[str]:
        values = self.get(obj, key, path, "a list", default)
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                self.fail(f"{path}.{key}[{i}]", "must be a non-empty string")
        return list(values)

    def duration(self, obj: Mapping[str, Any], key: str, path: str, default: str) -> int:
        """Milliseconds of a positive duration string."""
        try:
            ms = parse_duration(self.get(obj, key, path, "a string", default))
        except ValueError as exc:
            self.fail(f"{path}.{key}", str(exc))
        if ms <= 0:
            self.fail(f"{path}.{key}", "must be longer than zero")
        return ms

    def items(self, obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, dict]]:
        """(path, item) for each object in an optional list."""
        values = self.get(obj, key, path, "a list", [])
        out = []
        for i, item in enumerate(values):
            if not isinstance(item, dict):
                self.fail(f"{path}.{key}[{i}]", f"must be an object, got {type(item).__name__}")
            out.append((f"{path}.{key}[{i}]", item))
        return out


# ---------------------------------------------------------------------------------------------
# Public API.


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
    r = _Reader(f"RoutingPolicy {namespace}/{name}")
    _check_kind(r, policy, "RoutingPolicy")
    spec = r.get(policy, "spec", "", "an object")
    r.get(spec, "selector", "spec", "an object")  # used by the operator, not by the router
    routes = _routes(r, spec)
    route_names = [route["name"] for route in routes]
    lane_docs = _lanes(r, routes, lanes, lane_phases, namespace)
    triage = _triage(r, spec, route_names)
    _check_tools_routes(r, triage, routes, lane_docs)

    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "policy": {"name": name, "namespace": namespace},
        "mode": r.choice(spec, "mode", "spec", MODES, "enforce"),
        "defaultRoute": _route_ref(r, spec, "defaultRoute", "spec", route_names),
        "latencyBudgetMs": r.number(
            spec, "latencyBudgetMs", "spec", low=1, default=None, integer=True
        ),
        "budget": _budget(r, spec),
        "lanes": lane_docs,
        "routes": routes,
        "triage": triage,
        "complexity": _complexity(r, spec, route_names),
        "escalation": _escalation(r, spec, route_names),
        "fallback": _fallback(r, spec),
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


# ---------------------------------------------------------------------------------------------
# Resources and lanes.


def _identity(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        raise CompileError("RoutingPolicy", "metadata.name", "is required; name the policy")
    if not isinstance(namespace, str):
        raise CompileError(f"RoutingPolicy {name}", "metadata.namespace", "must be a string")
    return name, namespace


def _check_kind(r: _Reader, obj: Mapping[str, Any], kind: str) -> None:
    if obj.get("kind") != kind:
        r.fail("kind", f"must be {kind}, got {obj.get('kind')!r}", "WrongKind")
    if obj.get("apiVersion", CR_API_VERSION) != CR_API_VERSION:
        r.fail(
            "apiVersion", f"must be {CR_API_VERSION}, got {obj.get('apiVersion')!r}", "WrongKind"
        )


def _routes(r: _Reader, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
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
        lanes = r.strings(item, "lanes", path, _MISSING)
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


def _lanes(
    r: _Reader,
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
    r = _Reader(f"ModelLane {namespace}/{name}")
    if not isinstance(lane, Mapping):
        r.fail("", "must be a ModelLane object")
    _check_kind(r, lane, "ModelLane")
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


def _check_health_probe(r: _Reader, probe: Mapping[str, Any]) -> None:
    """The operator's probe settings: not in the router config, but checked like the CRD does."""
    path = "spec.healthProbe"
    interval = r.duration(probe, "interval", path, DEFAULT_PROBE["interval"])
    if interval < 1_000:
        r.fail(f"{path}.interval", "must be a duration of at least 1s, such as 10s or 1m")
    if r.duration(probe, "timeout", path, DEFAULT_PROBE["timeout"]) > interval:
        r.fail(f"{path}.timeout", "must not be longer than interval")
    for key in ("failureThreshold", "successThreshold"):
        r.number(probe, key, path, low=1, high=100, integer=True, default=DEFAULT_PROBE[key])


def _provider(r: _Reader, prov: Mapping[str, Any]) -> dict[str, Any]:
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


def _limits(r: _Reader, limits: Mapping[str, Any]) -> dict[str, int]:
    ctx = r.number(limits, "contextWindow", "spec.limits", low=1, integer=True)
    max_out = r.number(limits, "maxOutputTokens", "spec.limits", low=1, integer=True)
    if ctx < max_out:
        r.fail(
            "spec.limits.contextWindow", f"must be at least maxOutputTokens ({max_out}), got {ctx}"
        )
    return {"contextWindow": ctx, "maxOutputTokens": max_out}


def _timeouts(r: _Reader, timeouts: Mapping[str, Any]) -> dict[str, int]:
    path = "spec.timeouts"
    ms = {key: r.duration(timeouts, key, path, dflt) for key, dflt in DEFAULT_TIMEOUTS.items()}
    for key in ("connect", "firstToken"):
        if ms[key] > ms["total"]:
            r.fail(f"{path}.{key}", f"must not be longer than {path}.total")
    return {"connectMs": ms["connect"], "firstTokenMs": ms["firstToken"], "totalMs": ms["total"]}


# ---------------------------------------------------------------------------------------------
# Routing: triage, complexity, escalation, fallback, budget.


def _route_ref(
    r: _Reader, obj: Mapping[str, Any], key: str, path: str, route_names: list[str]
) -> str:
    value = r.text(obj, key, path)
    if value not in route_names:
        r.fail(
            f"{path}.{key}",
            f"route {value!r} is not defined; use one of {', '.join(route_names)} (spec.routes)",
            "RouteNotFound",
        )
    return value


def _condition(r: _Reader, obj: Mapping[str, Any], path: str) -> dict[str, Any]:
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


def _unique_name(r: _Reader, item: Mapping[str, Any], path: str, seen: set[str]) -> str:
    name = r.text(item, "name", path)
    if name in seen:
        r.fail(f"{path}.name", f"{name!r} is used twice; names must be unique", "DuplicateName")
    seen.add(name)
    return name


def _triage(r: _Reader, spec: Mapping[str, Any], route_names: list[str]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    return [
        {
            "name": _unique_name(r, item, path, seen),
            "when": _condition(r, item, path),
            "route": _route_ref(r, item, "route", path, route_names),
        }
        for path, item in r.items(spec, "triage", "spec")
    ]


def _complexity(r: _Reader, spec: Mapping[str, Any], route_names: list[str]) -> dict[str, Any]:
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
            {"min": low, "max": high, "route": _route_ref(r, item, "route", bpath, route_names)}
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


def _escalation(r: _Reader, spec: Mapping[str, Any], route_names: list[str]) -> dict[str, Any]:
    path = "spec.escalation"
    obj = r.get(spec, "escalation", "spec", "an object", {})
    return {
        "triggers": r.choices(obj, "triggers", path, ESCALATION_TRIGGERS, []),
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


def _escalation_path(r: _Reader, obj: Mapping[str, Any], route_names: list[str]) -> dict[str, str]:
    steps: dict[str, str] = {}
    for spath, item in r.items(obj, "path", "spec.escalation"):
        src = _route_ref(r, item, "from", spath, route_names)
        dst = _route_ref(r, item, "to", spath, route_names)
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


def _fallback(r: _Reader, spec: Mapping[str, Any]) -> dict[str, Any]:
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


def _budget(r: _Reader, spec: Mapping[str, Any]) -> dict[str, Any]:
    obj = r.get(spec, "budget", "spec", "an object", {})
    return {
        "maxCostPerRequest": r.number(obj, "maxCostPerRequest", "spec.budget", low=0, default=None),
        "onExceed": r.choice(obj, "onExceed", "spec.budget", BUDGET_ACTIONS, "skipLane"),
    }


def _check_tools_routes(
    r: _Reader, triage: list[dict[str, Any]], routes: list[dict[str, Any]], lanes: Mapping[str, Any]
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
