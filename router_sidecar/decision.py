"""The routing decision: which route serves a request, which lanes may try it, and why.

Called once per request by the sidecar's request engine, by `POST /v1/route/explain`, and by
`laneway explain` / `laneway eval`. Pure: no I/O, no clocks; lane health arrives as the config's
lane `phase` plus the caller's `lane_unavailable` callback (circuit breaker, 429 cool-down).

The steps, in order:

1. `requested_model` is `auto` (triage decides), a route name, or a lane name (served alone).
   Naming a route or lane is "forced": triage and scoring are skipped. A name that is both a
   route and a lane means the route. Anything else raises UnknownModel.
2. With `auto`, triage rules are evaluated in order and the first match wins. If none matches,
   the complexity score is `clamp(floor(base + sum of matching signal weights + 0.5), 1, 5)`
   (halves round up), and the band holding it names the route; with no bands, `defaultRoute`.
   A policy without complexity signals gets `DEFAULT_SIGNALS`.
3. When `tool_failures >= escalation.toolFailureThreshold` (and the threshold is above 0), the
   route moves one step along the escalation path. `tool_failures` is the larger of the
   `x-laneway-tool-failures` hint and the failed tool results since the last user message.
4. In `observe` mode an `auto` request is served by `defaultRoute`; what enforce would have
   chosen is kept in `enforce_*`. Forced requests are served as asked in both modes: the router
   made no choice to hold back.
5. The route's lanes are screened in order (see `screen_lanes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from router_sidecar.conditions import ConditionResult, evaluate
from router_sidecar.config import ComplexitySignal, Lane, RouterConfig
from router_sidecar.signals import Signals, build_frozen

AUTO = "auto"

# Output tokens assumed for a request that does not set max_tokens (capped by the lane's
# maxOutputTokens). Used for the pre-call cost estimate and as the output reserve in the
# context-window check: providers stop at the window rather than fail when max_tokens is unset,
# so reserving the lane's whole maxOutputTokens would wrongly skip lanes whose maxOutputTokens
# equals their context window.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 1_000

REASON_MAX_CHARS = 200

# Used when a policy declares complexity bands but no signals. With base 1 these give: short
# plain requests 1; a code block or a "why/compare/debug" question 2; long, multi-file,
# tool-using or high-risk work climbs to 4-5.
DEFAULT_SIGNALS: tuple[ComplexitySignal, ...] = (
    ComplexitySignal("long-prompt", {"promptTokensOver": 2_000}, 1),
    ComplexitySignal("very-long-prompt", {"promptTokensOver": 8_000}, 1),
    ComplexitySignal("code-block", {"hasCodeBlock": True}, 1),
    ComplexitySignal("several-files", {"filesOver": 1}, 1),
    ComplexitySignal("tools", {"hasTools": True}, 1),
    ComplexitySignal(
        "reasoning-words",
        {
            "keywordsAny": [
                "debug",
                "trace",
                "why",
                "compare",
                "analyze",
                "analyse",
                "root cause",
                "step by step",
                "trade-off",
                "tradeoffs",
                "architecture",
                "prove",
            ]
        },
        1,
    ),
    ComplexitySignal("high-risk", {"riskIn": ["high", "critical"]}, 1),
)

LaneUnavailable = Callable[[str], "str | None"]


def _always_available(lane: str) -> str | None:
    return None


class UnknownModel(ValueError):
    """The request's `model` is neither `auto` nor a route or lane of the loaded policy."""


@dataclass(frozen=True)
class RuleTrace:
    """One evaluated triage rule: did it match, and why."""

    name: str
    route: str
    matched: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """Everything about one routing decision; `explain()` renders it, the engine executes it."""

    mode: str
    route: str
    rule: str | None
    score: int | None
    lanes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    reasons: tuple[str, ...]
    reason: str
    enforce_route: str
    enforce_rule: str | None
    enforce_score: int | None
    trace: tuple[RuleTrace, ...]
    signals: Signals
    estimated_cost: Mapping[str, float]
    requested_model: str
    forced: bool
    # "route" or "lane" when forced, else None.
    forced_kind: str | None = None
    # (signal name, weight) for each complexity signal that added to the score.
    score_parts: tuple[tuple[str, float], ...] = ()
    # The lanes are unhealthy ones kept only because no healthy lane could serve.
    last_resort: bool = False
    # (from route, to route) when tool failures moved the request up the escalation path.
    tool_failure_escalation: tuple[str, str] | None = None
    # No lane serves because of the cost budget: `onExceed: reject` and the lane that would
    # serve is over it, or (`skipLane`) every lane that could serve is over it. A 402, not a 400.
    budget_rejected: bool = False


@dataclass(frozen=True)
class LaneScreen:
    """The outcome of screening a list of lanes for one request."""

    lanes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    last_resort: tuple[tuple[str, str], ...] = ()
    # The cost budget left no lane (see Decision.budget_rejected).
    budget_rejected: bool = False


@dataclass(frozen=True)
class _Choice:
    """What enforce mode chooses, before lanes are screened."""

    route: str
    rule: str | None
    score: int | None
    short: str
    reasons: tuple[str, ...]
    trace: tuple[RuleTrace, ...] = ()
    score_parts: tuple[tuple[str, float], ...] = ()
    forced_kind: str | None = None
    lane: str | None = None
    escalation: tuple[str, str] | None = None


# ---------------------------------------------------------------------------------------------
# Costs and lane screening.


def expected_output_tokens(lane: Lane, signals: Signals) -> int:
    """Output tokens assumed before the call: max_tokens if set, else a default; lane-capped."""
    return min(signals.max_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS, lane.max_output_tokens)


def estimate_cost(lane: Lane, signals: Signals) -> float:
    """USD estimated before the call: prompt tokens plus expected output tokens at lane prices."""
    return lane.cost(signals.prompt_tokens, expected_output_tokens(lane, signals))


def _needed_capabilities(signals: Signals) -> tuple[str, ...]:
    if not (
        signals.has_tools or signals.needs_json_schema or signals.needs_vision or signals.streaming
    ):
        return ()
    needed = []
    if signals.has_tools:
        needed.append("tools")
    if signals.needs_json_schema:
        needed.append("jsonSchema")
    if signals.needs_vision:
        needed.append("vision")
    if signals.streaming:
        needed.append("streaming")
    return tuple(needed)


def _hard_miss(lane: Lane, signals: Signals, needed: tuple[str, ...], output: int) -> str | None:
    """Why a lane cannot serve this request whatever its health, or None. `output` is
    `expected_output_tokens(lane, signals)`."""
    if needed:
        missing = [cap for cap in needed if cap not in lane.capabilities]
        if missing:
            return "missing capability " + ", ".join(missing)
    if signals.prompt_tokens + output > lane.context_window:
        return (
            f"context window {lane.context_window} < {signals.prompt_tokens + output} tokens "
            f"({signals.prompt_tokens} prompt + {output} output)"
        )
    return None


def _health_miss(lane: Lane, lane_unavailable: LaneUnavailable) -> str | None:
    if lane.phase == "Down":
        return "phase Down"
    return lane_unavailable(lane.name)


def screen_lanes(
    config: RouterConfig,
    names: tuple[str, ...],
    signals: Signals,
    lane_unavailable: LaneUnavailable = _always_available,
    spent: float = 0.0,
) -> LaneScreen:
    """Keep, in order, the lanes that can serve this request.

    Hard skips: a missing capability, a context window too small for prompt + output, or an
    estimate that, added to what the request has `spent` already (on the answers before an
    escalation), is over `budget.maxCostPerRequest`. Health skips: phase `Down` or a reason from
    `lane_unavailable`. When only health skips are left, those lanes are returned anyway as a
    last resort (a lane marked Down may have recovered). With `budget.onExceed: reject`, a request
    whose first usable lane is over budget gets no lanes at all instead of a cheaper backup.
    """
    return _screen(config, names, signals, lane_unavailable, {}, spent)


def _screen(
    config: RouterConfig,
    names: tuple[str, ...],
    signals: Signals,
    lane_unavailable: LaneUnavailable,
    costs: dict[str, float],
    spent: float = 0.0,
) -> LaneScreen:
    """`screen_lanes`, noting in `costs` the estimates the budget check made on the way."""
    needed = _needed_capabilities(signals)
    reject = config.budget.on_exceed == "reject"
    limit = config.budget.max_cost_per_request
    usable: list[str] = []
    hard: list[tuple[str, str]] = []
    soft: list[tuple[str, str]] = []
    over: list[tuple[str, str]] = []
    for name in names:
        lane = config.lanes[name]
        output = expected_output_tokens(lane, signals)
        miss = _hard_miss(lane, signals, needed, output)
        if miss is not None:
            hard.append((name, miss))
            continue
        if limit is not None:
            cost = costs[name] = lane.cost(signals.prompt_tokens, output)  # estimate_cost
            if cost + spent > limit:
                over.append((name, _over_budget(cost, spent, limit)))
                # The callback is asked only when its answer matters: it may cost a lock.
                if reject and not usable and _health_miss(lane, lane_unavailable) is None:
                    return _rejected(names, hard, over, soft)
                continue
        health = _health_miss(lane, lane_unavailable)
        if health is not None:
            soft.append((name, health))
        else:
            usable.append(name)

    if usable:
        skipped = _in_order(names, hard + over + soft) if hard or over or soft else ()
        return build_frozen(
            LaneScreen,
            {
                "lanes": tuple(usable),
                "skipped": skipped,
                "last_resort": (),
                "budget_rejected": False,
            },
        )
    return LaneScreen(
        tuple(n for n, _ in soft),
        _in_order(names, hard + over),
        tuple(soft),
        budget_rejected=bool(over) and not hard and not soft,
    )


def _over_budget(cost: float, spent: float, limit: float) -> str:
    if not spent:
        return f"estimated cost ${cost:.6f} over budget ${limit:.6f}"
    return (f"estimated cost ${cost:.6f} plus ${spent:.6f} already spent on this request over "
            f"budget ${limit:.6f}")


def _rejected(
    names: tuple[str, ...],
    hard: list[tuple[str, str]],
    over: list[tuple[str, str]],
    soft: list[tuple[str, str]],
) -> LaneScreen:
    # onExceed reject: the lane that would serve is over budget, so no lane serves.
    seen = {n for n, _ in hard + over + soft}
    tail = [(n, "not tried: budget.onExceed is reject") for n in names if n not in seen]
    over = [(n, f"{why} (budget.onExceed is reject)") for n, why in over]
    return LaneScreen((), _in_order(names, hard + over + soft + tail), budget_rejected=True)


def _in_order(
    names: tuple[str, ...], skipped: list[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    if len(skipped) < 2:
        return tuple(skipped)
    position = {name: i for i, name in enumerate(names)}
    return tuple(sorted(skipped, key=lambda item: position[item[0]]))


def lanes_for_route(
    config: RouterConfig,
    route: str,
    signals: Signals,
    lane_unavailable: LaneUnavailable = _always_available,
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(candidate lanes in order, (lane, reason) skipped) for one route; see `screen_lanes`."""
    screen = screen_lanes(config, config.routes[route].lanes, signals, lane_unavailable)
    return screen.lanes, screen.skipped


def escalation_target(config: RouterConfig, route: str) -> str | None:
    """The next route on the escalation path, or None at its end."""
    return config.escalation.path.get(route)


# ---------------------------------------------------------------------------------------------
# Choosing the route.


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _triage(config: RouterConfig, signals: Signals) -> tuple[list[RuleTrace], ConditionResult]:
    trace: list[RuleTrace] = []
    result = ConditionResult(False, "")
    for rule in config.triage:
        result = evaluate(rule.when, signals)
        trace.append(RuleTrace(rule.name, rule.route, result.matched, result.detail))
        if result.matched:
            break
    return trace, result


def complexity_score(
    config: RouterConfig, signals: Signals
) -> tuple[int, float, tuple[tuple[str, float], ...]]:
    """(score 1..5, raw sum, matching (signal, weight) pairs) for a request."""
    declared = config.complexity.signals or DEFAULT_SIGNALS
    parts = tuple((s.name, s.weight) for s in declared if evaluate(s.when, signals).matched)
    raw = config.complexity.base + sum(weight for _, weight in parts)
    return max(1, min(5, math.floor(raw + 0.5))), raw, parts


def _score_choice(
    config: RouterConfig, signals: Signals, trace: list[RuleTrace], reasons: list[str]
) -> _Choice:
    """The route the complexity score picks; its reasons follow `reasons` (the triage's)."""
    score, raw, parts = complexity_score(config, signals)
    terms = "".join(f" + {name} {_number(weight)}" for name, weight in parts)
    clamp = f" (raw {_number(raw)}, kept within 1..5)" if not 0.5 <= raw < 5.5 else ""
    reasons.append(
        f"complexity score {score} = base {_number(config.complexity.base)}{terms}{clamp}"
    )
    band = next((b for b in config.complexity.bands if b.min <= score <= b.max), None)
    if band is None:
        route = config.default_route
        reasons.append(f"no complexity bands: default route {route}")
        short = f"score {score} -> default {route}"
    else:
        route = band.route
        reasons.append(f"score {score} is in band {band.min}-{band.max} -> route {route}")
        short = f"score {score} -> {route}"
    return _Choice(route, None, score, short, tuple(reasons), tuple(trace), parts)


def _auto_choice(config: RouterConfig, signals: Signals) -> _Choice:
    trace, result = _triage(config, signals)
    reasons = [
        f"rule {t.name} -> {t.route}: {'matched' if t.matched else 'no match'} ({t.detail})"
        for t in trace
    ]
    if trace and trace[-1].matched:
        rule = trace[-1]
        short = f"rule {rule.name}: {result.short or result.detail}"
        return _Choice(rule.route, rule.name, None, short, tuple(reasons), tuple(trace))
    if config.triage:
        reasons.append("no triage rule matched")
    return _score_choice(config, signals, trace, reasons)


# Where a config object keeps its forced choices, by model name: they depend on nothing else, so
# each is made once per config rather than once per request.
_FORCED_CHOICES = "_decision_forced_choices"


def _forced_choice(config: RouterConfig, model: str) -> _Choice:
    cache = config.__dict__.get(_FORCED_CHOICES)
    if cache is None:
        cache = {}
        object.__setattr__(config, _FORCED_CHOICES, cache)  # not a field: eq and repr ignore it
    choice = cache.get(model)
    if choice is None:
        # Only route and lane names get here without raising, so the cache stays small.
        choice = cache[model] = _new_forced_choice(config, model)
    return choice


def _new_forced_choice(config: RouterConfig, model: str) -> _Choice:
    if model in config.routes:
        reason = f"model {model!r} names a route: triage skipped"
        return _Choice(model, None, None, f"model {model} (route)", (reason,), forced_kind="route")
    if model in config.lanes:
        # A lane served alone still reports a route for metrics: the first route that lists it.
        route = next((r.name for r in config.routes.values() if model in r.lanes), model)
        reason = f"model {model!r} names a lane: it alone serves, triage skipped"
        return _Choice(
            route, None, None, f"model {model} (lane)", (reason,), forced_kind="lane", lane=model
        )
    raise UnknownModel(
        f"model {model!r} is not known to policy "
        f"{config.policy_namespace}/{config.policy_name}; use 'auto', a route "
        f"({', '.join(config.routes)}) or a lane ({', '.join(sorted(config.lanes))})"
    )


def _after_tool_failures(config: RouterConfig, signals: Signals, choice: _Choice) -> _Choice:
    threshold = config.escalation.tool_failure_threshold
    if choice.lane is not None or threshold <= 0 or signals.tool_failures < threshold:
        return choice
    target = escalation_target(config, choice.route)
    seen = signals.tool_failures_seen == signals.tool_failures
    source = " (failed tool results since the last user message)" if seen else ""
    head = f"{signals.tool_failures} tool failures >= toolFailureThreshold {threshold}{source}"
    if target is None:
        note = f"{head}: route {choice.route} has no escalation target, staying"
        return replace(choice, reasons=(*choice.reasons, note))
    note = f"{head}: escalated route {choice.route} -> {target}"
    return replace(
        choice,
        route=target,
        reasons=(*choice.reasons, note),
        short=f"{choice.short}; {signals.tool_failures} tool failures -> {target}",
        escalation=(choice.route, target),
    )


# Control characters (ASCII 0-31 and DEL) become "?"; non-ASCII text is handled in header_safe.
_UNPRINTABLE = {**{code: "?" for code in range(32)}, 127: "?"}


def header_safe(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """Printable ASCII only, one line, at most `limit` characters: safe in an HTTP header."""
    if not text.isascii():
        text = text.encode("ascii", "replace").decode("ascii")  # one "?" per character
    cleaned = text if text.isprintable() else text.translate(_UNPRINTABLE)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# The decision.


def _lane_reasons(route: str, screen: LaneScreen, costs: Mapping[str, float]) -> list[str]:
    reasons = [f"lane {lane} skipped: {why}" for lane, why in screen.skipped]
    if screen.last_resort:
        kept = ", ".join(f"{lane} ({why})" for lane, why in screen.last_resort)
        reasons.append(f"no healthy lane in route {route}; trying anyway, as a last resort: {kept}")
    if screen.lanes:
        listed = ", ".join([f"{lane} (est. ${costs[lane]:.6f})" for lane in screen.lanes])
        reasons.append(f"candidate lanes: {listed}")
    else:
        reasons.append(f"no lane of route {route} can serve this request")
    return reasons


def decide(
    config: RouterConfig,
    signals: Signals,
    requested_model: str = AUTO,
    lane_unavailable: LaneUnavailable = _always_available,
) -> Decision:
    """Choose the route and candidate lanes for one request; raise UnknownModel for a bad model."""
    auto = requested_model == AUTO
    choice = _auto_choice(config, signals) if auto else _forced_choice(config, requested_model)
    enforce = served = _after_tool_failures(config, signals, choice)
    reasons = ["model 'auto': triage decides"] if auto else []
    reasons.extend(enforce.reasons)
    short = enforce.short
    if config.mode == "observe" and enforce.forced_kind is None:
        served = _Choice(config.default_route, None, None, "", ())
        reasons.append(
            f"observe mode: serving default route {config.default_route}; "
            f"enforce would have served {enforce.route}"
        )
        short = f"observe: default {config.default_route}; enforce {enforce.short}"

    names = (enforce.lane,) if enforce.lane else config.routes[served.route].lanes
    known: dict[str, float] = {}
    screen = _screen(config, names, signals, lane_unavailable, known)
    costs = {
        name: known[name] if name in known else estimate_cost(config.lanes[name], signals)
        for name in screen.lanes
    }
    reasons.extend(_lane_reasons(served.route, screen, costs))
    return build_frozen(
        Decision,
        {
            "mode": config.mode,
            "route": served.route,
            "rule": served.rule,
            "score": served.score,
            "lanes": screen.lanes,
            "skipped": screen.skipped,
            "reasons": tuple(reasons),
            "reason": header_safe(short),
            "enforce_route": enforce.route,
            "enforce_rule": enforce.rule,
            "enforce_score": enforce.score,
            "trace": enforce.trace,
            "signals": signals,
            "estimated_cost": costs,
            "requested_model": requested_model,
            "forced": enforce.forced_kind is not None,
            "forced_kind": enforce.forced_kind,
            "score_parts": enforce.score_parts,
            "last_resort": bool(screen.last_resort),
            "tool_failure_escalation": enforce.escalation,
            "budget_rejected": screen.budget_rejected,
        },
    )
