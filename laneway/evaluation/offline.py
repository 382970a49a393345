"""Offline evaluation: route every prompt with the sidecar's own decision code, then summarise.

`laneway.cmd_eval` calls `route_prompts` and `summarize`; `report` renders the summary and `live`
reuses the per-prompt routes. No model is called. The decision is exactly the one the sidecar
would make for the same body and hints (`router_sidecar.decision.decide` with `model: auto`), with
every lane taken as healthy. In `observe` mode the route reported is the one `enforce` would
choose, because that is the policy under evaluation; the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from laneway.evaluation.dataset import EvalPrompt
from router_sidecar.config import RouterConfig
from router_sidecar.decision import AUTO, Decision, decide, estimate_cost, lanes_for_route
from router_sidecar.signals import Signals, extract_signals

# A label is broken down in the report when it has this many distinct values (inclusive).
LABEL_VALUES_MIN = 2
LABEL_VALUES_MAX = 12
SCORED = "(complexity score)"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RoutedPrompt:
    """What the policy decides for one prompt, and what each route would cost for it."""

    prompt: EvalPrompt
    route: str
    lane: str | None
    rule: str | None
    score: int | None
    reason: str
    estimated_cost: float | None
    # Per route: its first lane that can serve this prompt (None if none can), and the estimated
    # cost there (on the route's primary lane when none can).
    route_lanes: Mapping[str, str | None]
    route_costs: Mapping[str, float]


@dataclass(frozen=True)
class CostComparison:
    """Estimated cost of the policy's routing against sending every prompt to one route."""

    routed_total: float
    per_route_total: Mapping[str, float]
    baseline_route: str
    baseline_total: float

    @property
    def saving(self) -> float:
        """Fraction of the baseline saved by routing (0.25 = 25 % cheaper); 0 with no baseline."""
        if self.baseline_total <= 0:
            return 0.0
        return 1 - self.routed_total / self.baseline_total


@dataclass(frozen=True)
class OfflineSummary:
    total: int
    routes: tuple[str, ...]
    by_family: Mapping[str, Counter[str]]
    by_label: Mapping[str, Mapping[str, Counter[str]]]
    by_route: Counter[str]
    rules: Counter[str]
    scores: Counter[int]
    unroutable: int
    cost: CostComparison


def _per_route(
    config: RouterConfig, signals: Signals
) -> tuple[dict[str, str | None], dict[str, float]]:
    """Per route, its first lane that can serve this request and the estimated cost there."""
    lanes: dict[str, str | None] = {}
    costs: dict[str, float] = {}
    for route in config.routes.values():
        usable, _ = lanes_for_route(config, route.name, signals)
        lanes[route.name] = usable[0] if usable else None
        costs[route.name] = estimate_cost(
            config.lanes[usable[0] if usable else route.lanes[0]], signals
        )
    return lanes, costs


def route_one(config: RouterConfig, prompt: EvalPrompt) -> tuple[RoutedPrompt, Decision]:
    """Decide one prompt as the sidecar would (`model: auto`, every lane healthy)."""
    signals = extract_signals(prompt.request_body(), prompt.hints)
    decision = decide(config, signals, AUTO)
    # Observe mode serves the default route; the policy under evaluation is the enforce choice.
    route, rule, score = decision.enforce_route, decision.enforce_rule, decision.enforce_score
    lanes = decision.lanes
    if route != decision.route:
        lanes, _ = lanes_for_route(config, route, signals)
    lane = lanes[0] if lanes else None
    route_lanes, route_costs = _per_route(config, signals)
    routed = RoutedPrompt(
        prompt=prompt,
        route=route,
        lane=lane,
        rule=rule,
        score=score,
        reason=decision.reason,
        estimated_cost=estimate_cost(config.lanes[lane], signals) if lane else None,
        route_lanes=route_lanes,
        route_costs=route_costs,
    )
    return routed, decision


def route_prompts(
    config: RouterConfig, prompts: Sequence[EvalPrompt], progress: Progress | None = None
) -> list[RoutedPrompt]:
    """Route every prompt in order; `progress(done, total)` is called after each one."""
    routed = []
    for done, prompt in enumerate(prompts, start=1):
        routed.append(route_one(config, prompt)[0])
        if progress is not None:
            progress(done, len(prompts))
    return routed


# ---------------------------------------------------------------------------------------------
# Aggregates.


def _by_label(routed: Sequence[RoutedPrompt]) -> dict[str, dict[str, Counter[str]]]:
    """Route counts per value of each label that has a useful number of distinct values."""
    table: dict[str, dict[str, Counter[str]]] = {}
    for item in routed:
        for label, value in item.prompt.labels.items():
            table.setdefault(label, {}).setdefault(value, Counter())[item.route] += 1
    return {
        label: dict(sorted(values.items()))
        for label, values in sorted(table.items())
        if LABEL_VALUES_MIN <= len(values) <= LABEL_VALUES_MAX
    }


def compare_costs(routed: Iterable[RoutedPrompt], routes: Sequence[str]) -> CostComparison:
    items = list(routed)
    per_route = {r: sum(item.route_costs[r] for item in items) for r in routes}
    baseline = max(routes, key=lambda r: (per_route[r], r))
    return CostComparison(
        routed_total=sum(item.estimated_cost or 0.0 for item in items),
        per_route_total=per_route,
        baseline_route=baseline,
        baseline_total=per_route[baseline],
    )


def summarize(config: RouterConfig, routed: Sequence[RoutedPrompt]) -> OfflineSummary:
    routes = tuple(config.routes)
    by_family: dict[str, Counter[str]] = {}
    for item in routed:
        by_family.setdefault(item.prompt.family, Counter())[item.route] += 1
    unmatched = [item for item in routed if item.rule is None and item.score is not None]
    return OfflineSummary(
        total=len(routed),
        routes=routes,
        by_family=dict(sorted(by_family.items(), key=lambda kv: (-kv[1].total(), kv[0]))),
        by_label=_by_label(routed),
        by_route=Counter(item.route for item in routed),
        rules=Counter(item.rule or SCORED for item in routed),
        scores=Counter(item.score for item in unmatched if item.score is not None),
        unroutable=sum(1 for item in routed if item.lane is None),
        cost=compare_costs(routed, routes),
    )
