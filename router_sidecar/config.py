"""The router config document: its schema, its validation, and its typed in-memory form.

The operator and `laneway compile` write this document (see `laneway_operator.compiler`); the
sidecar reads it. The sidecar owns the schema, so it lives here and the operator imports it, never
the other way round. `parse_config` validates a whole document before anything uses it: a config
that fails here never replaces a good one.

The document is JSON (YAML is accepted on load) with this shape, every duration in milliseconds:

    apiVersion: router.laneway.dev/v1      kind: RouterConfig
    version: sha256:<16 hex>               content hash of everything else, set by the compiler
    policy: {name, namespace}              mode: enforce | observe
    defaultRoute, latencyBudgetMs | null, budget: {maxCostPerRequest | null, onExceed}
    lanes:   {<name>: {provider, pricing, limits, capabilities, timeouts, phase}}
    routes:  [{name, lanes: [<lane>, ...]}]           primary first, then backups in order
    triage:  [{name, when, route}]                    first match wins
    complexity: {base, signals: [{name, when, weight}], bands: [{min, max, route}]}
    escalation: {triggers, uncertaintyMarkers, maxEscalations, toolFailureThreshold,
                 lowRiskLevels, path: {<from>: <to>}}
    fallback: {triggers, retries: {max, backoffMs}, retryBudgetPercent,
               circuitBreaker: {consecutiveFailures, cooldownMs}}

`when` is a condition tree; see `router_sidecar.conditions` for the keys it may hold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

API_VERSION = "router.laneway.dev/v1"
KIND = "RouterConfig"

PROVIDER_TYPES = ("openai", "anthropic")
CAPABILITIES = ("tools", "jsonSchema", "streaming", "vision")
LANE_PHASES = ("Healthy", "Degraded", "Down", "Unknown")
MODES = ("enforce", "observe")
ESCALATION_TRIGGERS = (
    "schemaInvalid",
    "toolCallInvalid",
    "truncated",
    "uncertain",
    "latencyBudgetExceeded",
    "refusal",
    "selfCheck",
)
FALLBACK_TRIGGERS = (
    "rateLimited",
    "timeout",
    "serverError",
    "connectionError",
    "contextOverflow",
    "refusal",
    "toolCallInvalid",
)
BUDGET_ACTIONS = ("skipLane", "reject")
CONDITION_KEYS = (
    "promptCharsOver",
    "promptTokensOver",
    "hasCodeBlock",
    "filesOver",
    "keywordsAny",
    "keywordsAll",
    "tierIn",
    "taskIn",
    "riskIn",
    "hasTools",
    "latencyBudgetMsUnder",
    "allOf",
    "anyOf",
    "not",
)


class ConfigError(ValueError):
    """A config document that must not be used; the message names the field and the fix."""


# ---------------------------------------------------------------------------------------------
# Typed form. Frozen: a loaded config is shared by every in-flight request and never mutated.


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Provider:
    type: str
    base_url: str
    model: str
    api_key: SecretRef | None


@dataclass(frozen=True)
class Lane:
    name: str
    provider: Provider
    input_per_million: float
    output_per_million: float
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str]
    connect_ms: int
    first_token_ms: int
    total_ms: int
    phase: str = "Unknown"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call of this size at this lane's prices."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


@dataclass(frozen=True)
class Route:
    name: str
    lanes: tuple[str, ...]


@dataclass(frozen=True)
class TriageRule:
    name: str
    when: Mapping[str, Any]
    route: str


@dataclass(frozen=True)
class ComplexitySignal:
    name: str
    when: Mapping[str, Any]
    weight: float


@dataclass(frozen=True)
class Band:
    min: int
    max: int
    route: str


@dataclass(frozen=True)
class Complexity:
    base: float
    signals: tuple[ComplexitySignal, ...]
    bands: tuple[Band, ...]


@dataclass(frozen=True)
class Escalation:
    triggers: frozenset[str]
    uncertainty_markers: tuple[str, ...]
    max_escalations: int
    tool_failure_threshold: int
    low_risk_levels: frozenset[str]
    path: Mapping[str, str]
    self_check: SelfCheck | None = None


@dataclass(frozen=True)
class SelfCheck:
    """The `selfCheck` trigger's lane and what it is told beyond the request and the answer."""

    lane: str
    instructions: str
    max_tokens: int


@dataclass(frozen=True)
class Fallback:
    triggers: frozenset[str]
    retries_max: int
    backoff_ms: int
    retry_budget_percent: float
    breaker_failures: int
    breaker_cooldown_ms: int


@dataclass(frozen=True)
class Budget:
    max_cost_per_request: float | None
    on_exceed: str


@dataclass(frozen=True)
class RouterConfig:
    version: str
    policy_name: str
    policy_namespace: str
    mode: str
    default_route: str
    latency_budget_ms: int | None
    lanes: Mapping[str, Lane]
    routes: Mapping[str, Route]
    triage: tuple[TriageRule, ...]
    complexity: Complexity
    escalation: Escalation
    fallback: Fallback
    budget: Budget
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Hashing and loading.


def canonical_json(doc: Mapping[str, Any]) -> str:
    """The one serialisation used for hashing and writing: sorted keys, no spaces."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_version(doc: Mapping[str, Any]) -> str:
    """Content hash of a config document, ignoring its own `version` field."""
    body = {k: v for k, v in doc.items() if k != "version"}
    return "sha256:" + hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def load_config_text(text: str, source: str = "<config>") -> RouterConfig:
    """Parse and validate a config document given as JSON or YAML text."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid JSON or YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: must hold one RouterConfig object")
    return parse_config(doc)


def load_config_file(path: str) -> RouterConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    return load_config_text(text, source=path)


# ---------------------------------------------------------------------------------------------
# Validation. Each helper takes the dotted path of the value so messages can name it.


def _get(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise ConfigError(f"{path}.{key}: is required")
    return _typed(obj[key], f"{path}.{key}", kind)


def _opt(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...], dflt: Any):
    if obj.get(key) is None:
        return dflt
    return _typed(obj[key], f"{path}.{key}", kind)


def _typed(value: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    # bool is an int in Python; a number field must not accept true/false.
    numeric = kind in (int, float, (int, float))
    if (numeric and isinstance(value, bool)) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: must be {names}, got {type(value).__name__}")
    return value


def _non_negative(value: float, path: str) -> float:
    if value < 0:
        raise ConfigError(f"{path}: must be zero or more, got {value}")
    return value


def _one_of(value: str, allowed: tuple[str, ...], path: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{path}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def validate_condition(when: Any, path: str) -> None:
    """Check a `when` tree's shape: known keys, right value types, non-empty combinators."""
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{path}: must be an object with at least one condition key")
    for key, value in when.items():
        sub = f"{path}.{key}"
        if key not in CONDITION_KEYS:
            raise ConfigError(f"{sub}: unknown condition; use one of {', '.join(CONDITION_KEYS)}")
        if key in ("allOf", "anyOf"):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{sub}: must be a non-empty list of conditions")
            for i, item in enumerate(value):
                validate_condition(item, f"{sub}[{i}]")
        elif key == "not":
            validate_condition(value, sub)
        elif key in ("hasCodeBlock", "hasTools"):
            _typed(value, sub, bool)
        elif key in ("promptCharsOver", "promptTokensOver", "filesOver"):
            _non_negative(_typed(value, sub, int), sub)
        elif key == "latencyBudgetMsUnder":
            if _typed(value, sub, int) < 1:
                raise ConfigError(f"{sub}: must be at least 1 millisecond, got {value}")
        else:
            items = _typed(value, sub, list)
            if not items or not all(isinstance(s, str) and s.strip() for s in items):
                raise ConfigError(f"{sub}: must be a non-empty list of non-empty strings")


def _parse_lane(name: str, obj: Any, path: str) -> Lane:
    _typed(obj, path, dict)
    prov = _get(obj, "provider", path, dict)
    ppath = f"{path}.provider"
    ref = _opt(prov, "apiKeySecretRef", ppath, dict, None)
    secret = None
    if ref is not None:
        rpath = f"{ppath}.apiKeySecretRef"
        secret = SecretRef(_get(ref, "name", rpath, str), _get(ref, "key", rpath, str))
    base_url = _get(prov, "baseURL", ppath, str)
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{ppath}.baseURL: must start with http:// or https://")
    pricing = _get(obj, "pricing", path, dict)
    limits = _get(obj, "limits", path, dict)
    timeouts = _opt(obj, "timeouts", path, dict, {})
    caps = _opt(obj, "capabilities", path, list, [])
    for i, cap in enumerate(caps):
        _one_of(cap, CAPABILITIES, f"{path}.capabilities[{i}]")
    ctx = _get(limits, "contextWindow", f"{path}.limits", int)
    max_out = _get(limits, "maxOutputTokens", f"{path}.limits", int)
    if ctx < 1 or max_out < 1 or max_out > ctx:
        raise ConfigError(f"{path}.limits: need 1 <= maxOutputTokens <= contextWindow")
    tpath = f"{path}.timeouts"
    return Lane(
        name=name,
        provider=Provider(
            type=_one_of(_get(prov, "type", ppath, str), PROVIDER_TYPES, f"{ppath}.type"),
            base_url=base_url.rstrip("/"),
            model=_get(prov, "model", ppath, str),
            api_key=secret,
        ),
        input_per_million=_non_negative(
            _get(pricing, "inputPerMillion", f"{path}.pricing", (int, float)), path
        ),
        output_per_million=_non_negative(
            _get(pricing, "outputPerMillion", f"{path}.pricing", (int, float)), path
        ),
        context_window=ctx,
        max_output_tokens=max_out,
        capabilities=frozenset(caps),
        connect_ms=_opt(timeouts, "connectMs", tpath, int, 5_000),
        first_token_ms=_opt(timeouts, "firstTokenMs", tpath, int, 30_000),
        total_ms=_opt(timeouts, "totalMs", tpath, int, 120_000),
        phase=_one_of(_opt(obj, "phase", path, str, "Unknown"), LANE_PHASES, f"{path}.phase"),
    )


def _parse_routes(doc: Mapping[str, Any], lanes: Mapping[str, Lane]) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for i, obj in enumerate(_get(doc, "routes", "config", list)):
        path = f"config.routes[{i}]"
        _typed(obj, path, dict)
        name = _get(obj, "name", path, str)
        if name in routes:
            raise ConfigError(f"{path}.name: route {name!r} is defined twice; names must be unique")
        names = _get(obj, "lanes", path, list)
        if not names:
            raise ConfigError(f"{path}.lanes: must name at least one lane")
        for j, lane in enumerate(names):
            if lane not in lanes:
                raise ConfigError(f"{path}.lanes[{j}]: lane {lane!r} is not in config.lanes")
        routes[name] = Route(name=name, lanes=tuple(names))
    if not routes:
        raise ConfigError("config.routes: must hold at least one route")
    return routes


def _route_ref(value: Any, path: str, routes: Mapping[str, Route]) -> str:
    _typed(value, path, str)
    if value not in routes:
        raise ConfigError(f"{path}: route {value!r} is not one of {', '.join(routes)}")
    return value


def _parse_complexity(obj: Mapping[str, Any], routes: Mapping[str, Route]) -> Complexity:
    path = "config.complexity"
    signals = []
    for i, sig in enumerate(_opt(obj, "signals", path, list, [])):
        spath = f"{path}.signals[{i}]"
        validate_condition(_get(sig, "when", spath, dict), f"{spath}.when")
        signals.append(
            ComplexitySignal(
                name=_get(sig, "name", spath, str),
                when=sig["when"],
                weight=_get(sig, "weight", spath, (int, float)),
            )
        )
    bands = []
    for i, band in enumerate(_opt(obj, "bands", path, list, [])):
        bpath = f"{path}.bands[{i}]"
        lo, hi = _get(band, "min", bpath, int), _get(band, "max", bpath, int)
        if not 1 <= lo <= hi <= 5:
            raise ConfigError(f"{bpath}: need 1 <= min <= max <= 5, got {lo}..{hi}")
        bands.append(Band(lo, hi, _route_ref(band.get("route"), f"{bpath}.route", routes)))
    if bands:
        covered = sorted(s for b in bands for s in range(b.min, b.max + 1))
        if covered != [1, 2, 3, 4, 5]:
            raise ConfigError(f"{path}.bands: must map every score 1..5 exactly once")
    return Complexity(
        base=_opt(obj, "base", path, (int, float), 1), signals=tuple(signals), bands=tuple(bands)
    )


def _parse_escalation(
    obj: Mapping[str, Any], routes: Mapping[str, Route], lanes: Mapping[str, Lane]
) -> Escalation:
    path = "config.escalation"
    triggers = _opt(obj, "triggers", path, list, [])
    for i, trig in enumerate(triggers):
        _one_of(trig, ESCALATION_TRIGGERS, f"{path}.triggers[{i}]")
    steps = _opt(obj, "path", path, dict, {})
    for src, dst in steps.items():
        _route_ref(src, f"{path}.path", routes)
        _route_ref(dst, f"{path}.path.{src}", routes)
    max_esc = _opt(obj, "maxEscalations", path, int, 1)
    if not 0 <= max_esc <= 5:
        raise ConfigError(f"{path}.maxEscalations: must be between 0 and 5, got {max_esc}")
    return Escalation(
        triggers=frozenset(triggers),
        uncertainty_markers=tuple(_opt(obj, "uncertaintyMarkers", path, list, [])),
        max_escalations=max_esc,
        tool_failure_threshold=_opt(obj, "toolFailureThreshold", path, int, 0),
        low_risk_levels=frozenset(_opt(obj, "lowRiskLevels", path, list, ["low"])),
        path=dict(steps),
        self_check=_parse_self_check(obj, path, triggers, lanes),
    )


def _parse_self_check(
    obj: Mapping[str, Any], path: str, triggers: list[str], lanes: Mapping[str, Lane]
) -> SelfCheck | None:
    check = _opt(obj, "selfCheck", path, dict, None)
    if check is None:
        if "selfCheck" in triggers:
            raise ConfigError(f"{path}.selfCheck: must name selfCheck.lane when selfCheck is a "
                              "trigger")
        return None
    spath = f"{path}.selfCheck"
    lane = _get(check, "lane", spath, str)
    if lane not in lanes:
        raise ConfigError(f"{spath}.lane: {lane!r} is not one of the config's lanes")
    max_tokens = _opt(check, "maxTokens", spath, int, 128)
    if not 16 <= max_tokens <= 4096:
        raise ConfigError(f"{spath}.maxTokens: must be between 16 and 4096, got {max_tokens}")
    return SelfCheck(lane, _opt(check, "instructions", spath, str, ""), max_tokens)


def _parse_fallback(obj: Mapping[str, Any]) -> Fallback:
    path = "config.fallback"
    triggers = _opt(obj, "triggers", path, list, list(FALLBACK_TRIGGERS[:5]))
    for i, trig in enumerate(triggers):
        _one_of(trig, FALLBACK_TRIGGERS, f"{path}.triggers[{i}]")
    retries = _opt(obj, "retries", path, dict, {})
    breaker = _opt(obj, "circuitBreaker", path, dict, {})
    return Fallback(
        triggers=frozenset(triggers),
        retries_max=_opt(retries, "max", f"{path}.retries", int, 1),
        backoff_ms=_opt(retries, "backoffMs", f"{path}.retries", int, 200),
        retry_budget_percent=_opt(obj, "retryBudgetPercent", path, (int, float), 20),
        breaker_failures=_opt(breaker, "consecutiveFailures", f"{path}.circuitBreaker", int, 5),
        breaker_cooldown_ms=_opt(breaker, "cooldownMs", f"{path}.circuitBreaker", int, 30_000),
    )


def parse_config(doc: Mapping[str, Any]) -> RouterConfig:
    """Validate a whole config document and return its typed form, or raise ConfigError."""
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ConfigError(f"config: apiVersion/kind must be {API_VERSION}/{KIND}")
    version = _get(doc, "version", "config", str)
    if version != content_version(doc):
        raise ConfigError("config.version: does not match the content hash; recompile the config")
    policy = _get(doc, "policy", "config", dict)
    lanes_obj = _get(doc, "lanes", "config", dict)
    lanes = {
        name: _parse_lane(name, obj, f"config.lanes.{name}") for name, obj in lanes_obj.items()
    }
    routes = _parse_routes(doc, lanes)
    triage = []
    for i, rule in enumerate(_opt(doc, "triage", "config", list, [])):
        path = f"config.triage[{i}]"
        validate_condition(_get(rule, "when", path, dict), f"{path}.when")
        triage.append(
            TriageRule(
                name=_get(rule, "name", path, str),
                when=rule["when"],
                route=_route_ref(rule.get("route"), f"{path}.route", routes),
            )
        )
    budget = _opt(doc, "budget", "config", dict, {})
    max_cost = _opt(budget, "maxCostPerRequest", "config.budget", (int, float), None)
    if max_cost is not None:
        _non_negative(max_cost, "config.budget.maxCostPerRequest")
    latency = _opt(doc, "latencyBudgetMs", "config", int, None)
    return RouterConfig(
        version=version,
        policy_name=_get(policy, "name", "config.policy", str),
        policy_namespace=_opt(policy, "namespace", "config.policy", str, "default"),
        mode=_one_of(_get(doc, "mode", "config", str), MODES, "config.mode"),
        default_route=_route_ref(doc.get("defaultRoute"), "config.defaultRoute", routes),
        latency_budget_ms=latency,
        lanes=lanes,
        routes=routes,
        triage=tuple(triage),
        complexity=_parse_complexity(_opt(doc, "complexity", "config", dict, {}), routes),
        escalation=_parse_escalation(_opt(doc, "escalation", "config", dict, {}), routes, lanes),
        fallback=_parse_fallback(_opt(doc, "fallback", "config", dict, {})),
        budget=Budget(
            max_cost_per_request=max_cost,
            on_exceed=_one_of(
                _opt(budget, "onExceed", "config.budget", str, "skipLane"),
                BUDGET_ACTIONS,
                "config.budget.onExceed",
            ),
        ),
        raw=doc,
    )
