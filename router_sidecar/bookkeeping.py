"""Per-request bookkeeping for the engine: what a request did on each lane and what it cost.

`server.py` builds one `Run` per chat completion request (importing it from
`router_sidecar.engine`) and hands it to `Engine.complete` or `Engine.stream`; `engine.py` is the
only caller of the rest. While the engine calls lanes it records here: one `LaneAttempt` per
skipped or called lane, the tokens and cost of each answered call, and each fallback (with its
reason as the metric label). The lane-call outcome types (`LaneAnswer`, `LaneFailed`) live here
too, and the helpers that turn the recorded attempts into the client's error when no lane could
serve. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router_sidecar import errors
from router_sidecar.config import Lane, RouterConfig
from router_sidecar.decision import Decision
from router_sidecar.decision_log import DecisionRecord, LaneAttempt
from router_sidecar.metrics import Metrics
from router_sidecar.providers.base import Usage
from router_sidecar.signals import Signals

# Health skips (from screening or the lane guards) as the `reason` of laneway_fallbacks_total:
# a lane ahead of the serving one that was skipped for its health is a fallback too.
HEALTH_SKIPS = {
    "phase Down": "down",
    "circuitOpen": "circuitOpen",
    "coolingDown": "coolingDown",
    "probeInFlight": "probeInFlight",
}


class LaneFailed(Exception):
    """A call to a lane failed; `result` is the answer anyway, for a refusal (which is served
    if no later lane does better)."""

    def __init__(self, failure: errors.UpstreamFailure, result: Any = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.result = result


@dataclass
class LaneAnswer:
    """A complete answer from one lane."""

    lane: Lane
    answer: dict[str, Any]
    usage: Usage
    ms: float
    raw: bytes | None  # the provider's bytes when they are already the OpenAI answer


@dataclass
class Run:
    """One chat completion request while the engine serves it."""

    config: RouterConfig
    body: Mapping[str, Any]
    signals: Signals
    decision: Decision
    record: DecisionRecord
    started: float
    deadline: float
    # The deadline comes from a latency budget (hint or policy), not just a lane's timeout.
    budgeted: bool = False
    route: str = ""
    lane: str = ""
    escalations: int = 0
    fallbacks: int = 0
    upstream_s: float = 0.0
    waited_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def attempt(self, attempt: LaneAttempt) -> None:
        self.record.attempts.append(attempt)

    def note_skipped(self, route: str, skipped: tuple[tuple[str, str], ...]) -> None:
        """Record the lanes screening left out of the route, each with its reason."""
        for lane, why in skipped:
            self.attempt(LaneAttempt(lane=lane, route=route, outcome="skipped", detail=why))

    def fell_back(self, previous: tuple[str, str], lane: str, metrics: Metrics) -> None:
        """Count a move from `previous` (lane, reason) to `lane`."""
        self.fallbacks += 1
        self.record.fallbacks += 1
        metrics.fallbacks.labels(previous[0], lane, previous[1]).inc()

    def account(
        self, lane: Lane, route: str, usage: Usage, output_chars: int, metrics: Metrics
    ) -> None:
        """Add one answered call's tokens and cost (estimated when the provider sent no usage)."""
        estimated = usage.input_tokens is None or usage.output_tokens is None
        read = usage.input_tokens if usage.input_tokens is not None else self.signals.prompt_tokens
        written = usage.output_tokens
        if written is None:
            written = -(-output_chars // 4)
        cost = lane.cost(read, written)
        rec = self.record
        rec.input_tokens += read
        rec.output_tokens += written
        rec.cost_usd += cost
        rec.cost_estimated = rec.cost_estimated or estimated
        metrics.count(metrics.tokens, (lane.name, "input"), read)
        metrics.count(metrics.tokens, (lane.name, "output"), written)
        metrics.count(metrics.cost, (self.config.policy_name, route, lane.name), cost)


def lane_attempt(
    lane: Lane,
    route: str,
    outcome: str,
    elapsed_s: float,
    status: int,
    retries: int,
    detail: str = "",
) -> LaneAttempt:
    """The attempt record of one call to `lane`."""
    return LaneAttempt(
        lane=lane.name,
        route=route,
        outcome=outcome,
        ms=elapsed_s * 1000,
        status=status,
        retries=retries,
        detail=detail,
    )


def outcomes(run: Run, route: str) -> list[errors.AttemptOutcome]:
    """The attempts on one route, one line per lane call, for the all-failed message."""
    return [
        errors.AttemptOutcome(a.lane, a.outcome, a.detail)
        for a in run.record.attempts
        if a.route == route
    ]


def health_skipped_ahead(
    config: RouterConfig, route: str, first: str, skipped: tuple[tuple[str, str], ...]
) -> tuple[str, str] | None:
    """(lane, reason) of the first lane listed before `first` in the route that screening
    skipped for its health, or None: the request falls back from it."""
    spec = config.routes.get(route)
    order = spec.lanes if spec is not None else ()
    if first not in order:
        return None
    ahead = order[: order.index(first)]
    for lane, why in skipped:
        reason = HEALTH_SKIPS.get(why)
        if reason is not None and lane in ahead:
            return lane, reason
    return None


def no_lane(run: Run, route: str) -> errors.RouterError:
    """No lane of the route can serve: over budget (402) or unable (400), with each reason."""
    skipped = [(a.lane, a.detail) for a in run.record.attempts if a.route == route]
    listed = "; ".join(f"{lane}: {why}" for lane, why in skipped) or "the route has no lanes"
    if run.decision.budget_rejected:
        return errors.budget_rejected(f"no lane of route {route!r} fits: {listed}.")
    return errors.RouterError(
        400,
        f"No lane of route {route!r} can serve this request: {listed}.",
        code="no_capable_lane",
    )
