"""The sidecar's Prometheus metrics, in their own registry (one per app, so tests can run many).

`server.py` creates one `Metrics` per application and serves `render()` on `GET /metrics`;
`engine.py`, `reload.py` and the handlers record into it. What every request records goes through
`count` and `observe`. Both only add to plain dicts, which are added to the Prometheus counters and
histograms when `/metrics` is read, so a scrape always sees every request that finished before it;
the dicts hold one number (a counter's) or one sum and one count per bucket (a histogram's) per
label set, so they stay as small as the metrics themselves. Every name carries the `laneway_`
prefix and the label sets are the SPEC's. Label values are route, lane, rule and
policy names from the config, a few fixed outcome words, and the config version: never prompt text,
user ids or secrets, and always a bounded set.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from router_sidecar.resilience import STATES

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Outcomes of one request in `laneway_requests_total{outcome}`. The others come with the error
# that ended the request (`errors.RouterError.outcome`): bad_request (the router refused it),
# rejected (a provider refused it as the client's fault), budget (over the cost budget), failed
# (every lane failed), unavailable (no config loaded yet).
OK = "ok"  # an answer was served
FAILED = "failed"  # also: a stream that broke after it started
CANCELLED = "cancelled"  # the client went away first
ERROR = "error"  # a bug in the router (HTTP 500)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class _CachedLabels:
    """`labels(*values)` served from a dict after the first call for those values.

    prometheus_client checks and converts the label values on every `labels()` call, which costs
    more than the increment itself; the request path calls it about ten times per request.
    `remove` and `clear` drop the cached children with the real ones.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}
        super().__init__(*args, **kwargs)

    def labels(self, *values: Any, **kwargs: Any) -> Any:
        if kwargs:
            return super().labels(*values, **kwargs)  # type: ignore[misc]
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = super().labels(*values)  # type: ignore[misc]
        return child

    def remove(self, *values: Any) -> None:
        self._children.clear()
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self._children.clear()
        super().clear()  # type: ignore[misc]


class Counter(_CachedLabels, _Counter):
    pass


class Gauge(_CachedLabels, _Gauge):
    pass


class Histogram(_CachedLabels, _Histogram):
    """A histogram that also takes observations counted elsewhere (`Metrics.observe`). It reads
    prometheus_client's own `_upper_bounds`, `_sum` and `_buckets` (the version is pinned)."""

    @property
    def upper_bounds(self) -> list[float]:
        """The buckets' upper bounds in order, the last one +Inf."""
        return self._upper_bounds

    def series(self, labels: tuple[str, ...]) -> Histogram:
        """The series of these label values (the histogram itself when it has no labels); the
        ValueError `labels()` or `observe()` would raise for wrong ones."""
        if labels:
            child: Histogram = self.labels(*labels)
            return child
        self._raise_if_not_observable()
        return self

    def add_observations(self, total: float, counts: list[int]) -> None:
        """Add observations noted elsewhere to this series: their sum, and how many fell in each
        bucket (the first whose upper bound holds the value, as `observe` counts them)."""
        self._raise_if_not_observable()
        self._sum.inc(total)
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


class _Observed:
    """Observations of one histogram series since the last scrape."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.total = 0.0
        self.counts = [0] * len(bounds)


class Metrics:
    """Every metric the sidecar exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._traffic(self.registry)
        self._routing(self.registry)
        self._state(self.registry)
        self._version: str | None = None
        self._lanes: set[str] = set()
        self.lane_states: Callable[[], Mapping[str, str]] | None = None
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[Histogram, tuple[str, ...]], _Observed] = {}

    # -- the request path -----------------------------------------------------------------------

    def count(self, counter: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Add `amount` to the counter's series with these label values (at the next scrape)."""
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def observe(self, histogram: Histogram, labels: tuple[str, ...], value: float) -> None:
        """Observe `value` in the histogram's series with these label values (at the next
        scrape)."""
        seen = self._observed.get((histogram, labels))
        if seen is None:
            seen = self._new_series(histogram, labels)
        seen.total += value
        # The first bucket whose upper bound holds the value. The last bound is +Inf, so that
        # is any value but NaN, which (as with prometheus_client's own `observe`) holds for none.
        bounds = seen.bounds
        i = bisect_left(bounds, value)
        if value <= bounds[i]:
            seen.counts[i] += 1

    def _new_series(self, histogram: Histogram, labels: tuple[str, ...]) -> _Observed:
        histogram.series(labels)  # wrong label values fail here, not at the next scrape
        seen = self._observed[(histogram, labels)] = _Observed(histogram.upper_bounds)
        return seen

    def flush(self) -> None:
        """Add the counts and observations noted since the last flush to Prometheus."""
        counts, self._counts = self._counts, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)
        observed, self._observed = self._observed, {}
        for (histogram, labels), seen in observed.items():
            histogram.series(labels).add_observations(seen.total, seen.counts)

    def _traffic(self, reg: CollectorRegistry) -> None:
        self.requests = Counter(
            "laneway_requests",
            "Chat completion requests, by the route and lane that finally served them.",
            ["policy", "route", "lane", "outcome"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "laneway_request_duration_seconds",
            "Time from receiving a chat completion request to its last byte.",
            ["policy", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.upstream_duration = Histogram(
            "laneway_upstream_duration_seconds",
            "Time spent in one call to a lane's provider, by lane and outcome.",
            ["lane", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.router_overhead = Histogram(
            "laneway_router_overhead_seconds",
            "Time the router itself added to a request: total minus upstream and backoff.",
            buckets=_OVERHEAD_BUCKETS,
            registry=reg,
        )
        self.tokens = Counter(
            "laneway_tokens",
            "Tokens sent to (input) and received from (output) each lane.",
            ["lane", "direction"],
            registry=reg,
        )
        self.cost = Counter(
            "laneway_cost_usd",
            "Estimated spend in USD from lane prices and reported (or estimated) usage.",
            ["policy", "route", "lane"],
            registry=reg,
        )
        self.observe_enforce_cost = Counter(
            "laneway_observe_enforce_cost_usd",
            "Observe mode: estimated USD enforce would have spent, on its route's first lane.",
            ["policy", "route"],
            registry=reg,
        )

    def _routing(self, reg: CollectorRegistry) -> None:
        self.escalations = Counter(
            "laneway_escalations",
            "Finished answers moved to the next route, and why.",
            ["from_route", "to_route", "reason"],
            registry=reg,
        )
        self.fallbacks = Counter(
            "laneway_fallbacks",
            "Requests moved from one lane to the next lane of the same route, and why.",
            ["from_lane", "to_lane", "reason"],
            registry=reg,
        )
        self.retries = Counter(
            "laneway_retries",
            "Retries of a failed call on the same lane (bounded by the retry budget).",
            ["lane"],
            registry=reg,
        )
        self.retries_denied = Counter(
            "laneway_retry_budget_exhausted",
            "Retries skipped because the retry budget was spent.",
            ["lane"],
            registry=reg,
        )
        self.decisions = Counter(
            "laneway_decisions",
            "Routing decisions; in observe mode, the route and rule enforce would have chosen.",
            ["policy", "rule", "route", "mode"],
            registry=reg,
        )
        self.feedback = Counter(
            "laneway_feedback",
            "Feedback on served answers (accepted, corrected), by the route that served them.",
            ["outcome", "route"],
            registry=reg,
        )

    def _state(self, reg: CollectorRegistry) -> None:
        self.lane_state = Gauge(
            "laneway_lane_state",
            "Each lane's circuit state in this sidecar: 1 for the current state, else 0.",
            ["lane", "state"],
            registry=reg,
        )
        self.config_info = Gauge(
            "laneway_config_info",
            "The config version this sidecar serves (value 1).",
            ["version"],
            registry=reg,
        )
        self.config_reload_failures = Counter(
            "laneway_config_reload_failures",
            "Config documents rejected; the last good config kept serving.",
            registry=reg,
        )
        self.config_stale = Gauge(
            "laneway_config_stale",
            "1 while the newest config seen was rejected and an older one is served.",
            registry=reg,
        )

    def set_config(self, version: str, lane_states: Mapping[str, str]) -> None:
        """Show the loaded version and every lane's current state."""
        if self._version is not None and self._version != version:
            self.config_info.remove(self._version)
        self._version = version
        self.config_info.labels(version).set(1)
        for lane in self._lanes - set(lane_states):
            for name in STATES:
                self.lane_state.remove(lane, name)
        self._lanes = set(lane_states)
        for lane, state in lane_states.items():
            self.set_lane_state(lane, state)

    def set_lane_state(self, lane: str, state: str) -> None:
        for name in STATES:
            self.lane_state.labels(lane, name).set(1 if name == state else 0)

    def render(self) -> bytes:
        self.flush()
        # Circuits move from open to half-open as time passes, so read the states at scrape time.
        if self.lane_states is not None:
            for lane, state in self.lane_states().items():
                self.set_lane_state(lane, state)
        return generate_latest(self.registry)
