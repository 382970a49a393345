"""The routing map: per task family, which lane is cheapest, fastest and best, and what to change.

`laneway.cmd_eval --live` calls `build_routing_map` with the offline routes and the graded live
answers; `report` and `chart` render the result. Pure code. The rules, as `docs/eval.md` states:

- A lane *passes* a family when its pass rate on the family's prompts is at least
  `PASS_THRESHOLD`. Cheapest passing lane: lowest cost per successful answer among passing lanes.
  Fastest passing lane: lowest median latency among passing lanes. Best lane: highest pass rate,
  then lowest cost per prompt, then lowest median latency (passing or not).
- The *routed* pass rate is measured, prompt by prompt, on the lane the policy sends that prompt
  to. A route's pass rate on a family is measured the same way on that route's first usable lane.
- Escalation outcome: for each prompt whose routed answer failed, would the sidecar have
  escalated (did its answer set off one of the policy's escalation triggers, and does the route
  have a next step on the escalation path), and would the next route's lane have passed? Up to
  `maxEscalations` steps are followed. Failures no trigger catches are *silent*.
- Recommendation: when the routed pass rate is below the threshold, move the family to the
  cheapest route that reaches it ("up" when that route costs more, which is the usual case);
  when it is not reached by any route, say so. When the routed pass rate meets the threshold and
  a cheaper route passes at least as often, move the family "down" to the cheapest such route.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from laneway.evaluation.live import LaneAnswer
from laneway.evaluation.offline import RoutedPrompt
from laneway.stats import percentile
from router_sidecar.config import RouterConfig

PASS_THRESHOLD = 0.8
ALL = "(all prompts)"


@dataclass(frozen=True)
class LaneStats:
    """One lane on one family (or on every prompt when family is ALL)."""

    lane: str
    family: str
    prompts: int
    passed: int
    cost_total: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    errors: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.prompts if self.prompts else 0.0

    @property
    def cost_per_prompt(self) -> float:
        return self.cost_total / self.prompts if self.prompts else 0.0

    @property
    def cost_per_success(self) -> float | None:
        return self.cost_total / self.passed if self.passed else None


@dataclass(frozen=True)
class RouteStats:
    route: str
    prompts: int
    passed: int
    cost_total: float

    @property
    def pass_rate(self) -> float:
        return self.passed / self.prompts if self.prompts else 0.0

    @property
    def cost_per_prompt(self) -> float:
        return self.cost_total / self.prompts if self.prompts else 0.0


@dataclass(frozen=True)
class EscalationOutcome:
    failures: int
    escalated: int
    rescued: int
    silent: int


@dataclass(frozen=True)
class Recommendation:
    """`action` is keep, up, down or none-passes; `target` the route to move to, if any."""

    action: str
    target: str | None
    why: str


@dataclass(frozen=True)
class FamilyMap:
    family: str
    prompts: int
    routed_routes: Mapping[str, int]
    routed: RouteStats
    cheapest_passing: str | None
    fastest_passing: str | None
    best: str | None
    escalation: EscalationOutcome
    recommendation: Recommendation
    lanes: tuple[LaneStats, ...]
    routes: tuple[RouteStats, ...]

    @property
    def main_route(self) -> str:
        """The route most of the family's prompts get (ties: the first in policy order)."""
        return _main_route(self.routed_routes)


@dataclass(frozen=True)
class RoutingMap:
    threshold: float
    families: tuple[FamilyMap, ...]
    overall: FamilyMap


def _main_route(counts: Mapping[str, int]) -> str:
    return max(counts, key=lambda route: counts[route])


# ---------------------------------------------------------------------------------------------
# Statistics.


def lane_stats(lane: str, family: str, answers: Sequence[LaneAnswer]) -> LaneStats:
    called = [a.latency_ms for a in answers if a.called and a.error is None]
    return LaneStats(
        lane=lane,
        family=family,
        prompts=len(answers),
        passed=sum(1 for a in answers if a.passed),
        cost_total=sum(a.cost for a in answers),
        latency_p50_ms=statistics.median(called) if called else None,
        latency_p95_ms=percentile(called, 0.95),
        errors=sum(1 for a in answers if a.error is not None),
    )


Answers = Mapping[tuple[str, str], LaneAnswer]


def _route_stats(route: str, items: Sequence[RoutedPrompt], answers: Answers) -> RouteStats:
    """A route measured on its first usable lane for each prompt; no lane counts as a fail."""
    passed, cost = 0, 0.0
    for item in items:
        lane = item.route_lanes.get(route)
        answer = answers.get((item.prompt.id, lane)) if lane else None
        if answer is not None:
            passed += answer.passed
            cost += answer.cost
    return RouteStats(route, len(items), passed, cost)


def _routed_stats(items: Sequence[RoutedPrompt], answers: Answers) -> RouteStats:
    passed, cost = 0, 0.0
    for item in items:
        answer = answers.get((item.prompt.id, item.lane)) if item.lane else None
        if answer is not None:
            passed += answer.passed
            cost += answer.cost
    return RouteStats("(as routed)", len(items), passed, cost)


# ---------------------------------------------------------------------------------------------
# Choices.


def _passing(lanes: Sequence[LaneStats], threshold: float) -> list[LaneStats]:
    return [s for s in lanes if s.prompts and s.pass_rate >= threshold]


def _cheapest(passing: Sequence[LaneStats]) -> str | None:
    ranked = sorted(passing, key=lambda s: (s.cost_per_success or 0.0, s.lane))
    return ranked[0].lane if ranked else None


def _fastest(passing: Sequence[LaneStats]) -> str | None:
    timed = [s for s in passing if s.latency_p50_ms is not None]
    ranked = sorted(timed, key=lambda s: (s.latency_p50_ms or 0.0, s.lane))
    return ranked[0].lane if ranked else None


def _best(lanes: Sequence[LaneStats]) -> str | None:
    ranked = sorted(
        (s for s in lanes if s.prompts and s.passed),
        key=lambda s: (-s.pass_rate, s.cost_per_prompt, s.latency_p50_ms or 0.0, s.lane),
    )
    return ranked[0].lane if ranked else None


def _escalation(
    config: RouterConfig, items: Sequence[RoutedPrompt], answers: Answers
) -> EscalationOutcome:
    failures = escalated = rescued = 0
    for item in items:
        answer = answers.get((item.prompt.id, item.lane)) if item.lane else None
        if answer is None or answer.passed:
            continue
        failures += 1
        outcome = _follow_path(config, item, answer, answers)
        escalated += outcome != "silent"
        rescued += outcome == "rescued"
    return EscalationOutcome(failures, escalated, rescued, failures - escalated)


def _follow_path(
    config: RouterConfig, item: RoutedPrompt, answer: LaneAnswer, answers: Answers
) -> str:
    """silent (nothing would escalate), rescued, or escalated (escalated but still failing)."""
    route, current, steps = item.route, answer, 0
    while steps < config.escalation.max_escalations:
        target = config.escalation.path.get(route)
        if current.trigger is None or target is None:
            break
        steps += 1
        lane = item.route_lanes.get(target)
        nxt = answers.get((item.prompt.id, lane)) if lane else None
        if nxt is not None and nxt.passed:
            return "rescued"
        if nxt is None:
            break
        route, current = target, nxt
    return "escalated" if steps else "silent"


def _recommend(
    routed: RouteStats, routes: Sequence[RouteStats], threshold: float, main: str
) -> Recommendation:
    by_cost = sorted((r for r in routes if r.prompts), key=lambda r: (r.cost_per_prompt, r.route))
    passing = [r for r in by_cost if r.pass_rate >= threshold]
    rate = f"{routed.pass_rate:.0%}"
    if routed.pass_rate < threshold:
        if not passing:
            return Recommendation(
                "none-passes", None, f"routed pass rate {rate}; no route reaches {threshold:.0%}"
            )
        target = passing[0]
        action = "up" if target.cost_per_prompt > routed.cost_per_prompt else "down"
        return Recommendation(
            action,
            target.route,
            f"routed pass rate {rate} < {threshold:.0%}; {target.route} passes "
            f"{target.pass_rate:.0%} at ${target.cost_per_prompt:.6f} per prompt",
        )
    cheaper = [
        r
        for r in passing
        if r.cost_per_prompt < routed.cost_per_prompt and r.pass_rate >= routed.pass_rate
    ]
    if cheaper:
        target = cheaper[0]
        return Recommendation(
            "down",
            target.route,
            f"{target.route} passes {target.pass_rate:.0%} (routed {rate}) at "
            f"${target.cost_per_prompt:.6f} instead of ${routed.cost_per_prompt:.6f} per prompt",
        )
    return Recommendation("keep", main, f"routed pass rate {rate}; no cheaper route passes as well")


# ---------------------------------------------------------------------------------------------
# The map.


def _family_map(
    config: RouterConfig,
    family: str,
    items: Sequence[RoutedPrompt],
    answers: Answers,
    threshold: float,
) -> FamilyMap:
    by_lane: dict[str, list[LaneAnswer]] = {lane: [] for lane in config.lanes}
    for item in items:
        for lane, found in by_lane.items():
            answer = answers.get((item.prompt.id, lane))
            if answer is not None:
                found.append(answer)
    lanes = tuple(lane_stats(lane, family, found) for lane, found in by_lane.items())
    routes = tuple(_route_stats(route, items, answers) for route in config.routes)
    routed_routes = {r: n for r in config.routes if (n := sum(i.route == r for i in items))}
    routed = _routed_stats(items, answers)
    passing = _passing(lanes, threshold)
    main = _main_route(routed_routes)
    return FamilyMap(
        family=family,
        prompts=len(items),
        routed_routes=routed_routes,
        routed=routed,
        cheapest_passing=_cheapest(passing),
        fastest_passing=_fastest(passing),
        best=_best(lanes),
        escalation=_escalation(config, items, answers),
        recommendation=_recommend(routed, routes, threshold, main),
        lanes=lanes,
        routes=routes,
    )


def build_routing_map(
    config: RouterConfig,
    routed: Sequence[RoutedPrompt],
    answers: Sequence[LaneAnswer],
    threshold: float = PASS_THRESHOLD,
) -> RoutingMap:
    """The per-family routing map, largest family first, plus the same over every prompt."""
    by_key = {(a.prompt_id, a.lane): a for a in answers}
    families: dict[str, list[RoutedPrompt]] = {}
    for item in routed:
        families.setdefault(item.prompt.family, []).append(item)
    ordered = sorted(families.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return RoutingMap(
        threshold=threshold,
        families=tuple(_family_map(config, f, items, by_key, threshold) for f, items in ordered),
        overall=_family_map(config, ALL, list(routed), by_key, threshold),
    )
