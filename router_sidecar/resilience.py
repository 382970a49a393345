"""Runtime lane health inside one sidecar: circuit breakers, 429 cool-downs and the retry budget.

`engine.py` owns one `LaneGuards` and one `RetryBudget` for the life of the process (they survive
config reloads; a lane keeps its state while its name stays the same). The routing decision asks
`LaneGuards.unavailable(lane)` which lanes to skip; the engine calls `acquire` right before it
sends a request to a lane and `record_success` / `record_failure` / `cool_down` afterwards.

Circuit breaker: after `consecutiveFailures` failures in a row the lane is open for `cooldown`.
Then it is half-open: exactly one request (the probe) may go through; if it succeeds the circuit
closes, if it fails the circuit opens for another cooldown. While the probe is in flight, other
requests skip the lane. A 429 with Retry-After cools the lane down for that long without counting
as a breaker failure (the provider is healthy, just busy).

Retry budget: retries are allowed while the retries of the last `window_s` seconds stay under
`percent` % of the requests of the same window, plus a small floor so a quiet sidecar can still
retry. An outage therefore cannot multiply the load on a provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "halfOpen"
COOLING = "coolingDown"
STATES = (CLOSED, HALF_OPEN, OPEN, COOLING)

Clock = Callable[[], float]


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    half_open: bool = False
    probe_until: float = 0.0
    cool_until: float = 0.0


class LaneGuards:
    """Circuit breaker and cool-down state for every lane, by lane name."""

    def __init__(self, clock: Clock = time.monotonic, probe_lease_s: float = 300.0) -> None:
        self._clock = clock
        self._lanes: dict[str, _Breaker] = {}
        self._probe_lease_s = probe_lease_s

    def _get(self, lane: str) -> _Breaker:
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Breaker()
        return state

    def state(self, lane: str) -> str:
        """The lane's current state, one of STATES."""
        st = self._lanes.get(lane)
        if st is None:
            return CLOSED
        now = self._clock()
        if st.open_until > now:
            return OPEN
        if st.half_open:
            return HALF_OPEN
        if st.cool_until > now:
            return COOLING
        return CLOSED

    def unavailable(self, lane: str) -> str | None:
        """Why the lane must be skipped right now, or None. Does not change any state."""
        st = self._lanes.get(lane)
        if st is None:
            return None
        now = self._clock()
        if st.open_until > now:
            return "circuitOpen"
        if st.cool_until > now:
            return "coolingDown"
        if st.half_open and st.probe_until > now:
            return "probeInFlight"
        return None

    def acquire(self, lane: str) -> str | None:
        """Claim the lane for one call; returns the reason to skip it instead, or None.

        A half-open lane hands out a single probe; the probe's lease ends when its outcome is
        recorded (or after `probe_lease_s`, in case a caller never reports back).
        """
        if lane not in self._lanes:
            return None  # a lane that never failed: the usual case
        reason = self.unavailable(lane)
        if reason is not None:
            return reason
        st = self._lanes.get(lane)
        if st is not None and st.half_open:
            st.probe_until = self._clock() + self._probe_lease_s
        return None

    def release(self, lane: str) -> None:
        """Give back a claimed probe without an outcome (the call was cancelled)."""
        st = self._lanes.get(lane)
        if st is not None:
            st.probe_until = 0.0

    def record_success(self, lane: str) -> bool:
        """Reset the failure count; returns True when this closed a half-open circuit."""
        st = self._lanes.get(lane)
        if st is None or (st.failures == 0 and not st.half_open):
            return False
        closed = st.half_open
        st.failures, st.half_open, st.probe_until, st.open_until = 0, False, 0.0, 0.0
        return closed

    def record_failure(self, lane: str, threshold: int, cooldown_s: float) -> bool:
        """Count a breaker failure; returns True when this failure opened the circuit."""
        st = self._get(lane)
        now = self._clock()
        st.failures += 1
        if st.half_open or (threshold > 0 and st.failures >= threshold):
            st.open_until = now + cooldown_s
            st.half_open = True  # once the cooldown ends, the next call is a probe
            st.probe_until = 0.0
            return True
        return False

    def cool_down(self, lane: str, seconds: float) -> None:
        """Skip the lane for `seconds` (a 429's Retry-After); not a breaker failure."""
        st = self._get(lane)
        st.cool_until = max(st.cool_until, self._clock() + seconds)

    def forget_except(self, lanes: Iterable[str]) -> None:
        """Drop the state of lanes no longer in the config."""
        keep = set(lanes)
        for name in [n for n in self._lanes if n not in keep]:
            del self._lanes[name]


class RetryBudget:
    """Sliding-window retry budget: retries <= percent % of requests (+ a floor) per window."""

    def __init__(
        self,
        percent: float,
        window_s: float = 10.0,
        min_retries: int = 3,
        clock: Clock = time.monotonic,
        slots: int = 10,
    ) -> None:
        self.percent = percent
        self._clock = clock
        self._slot_s = window_s / slots
        self._min = min_retries
        self._requests = [0] * slots
        self._retries = [0] * slots
        self._slot_ids = [-1] * slots

    def _slot(self) -> int:
        slot_id = int(self._clock() / self._slot_s)
        index = slot_id % len(self._slot_ids)
        if self._slot_ids[index] != slot_id:
            self._slot_ids[index] = slot_id
            self._requests[index] = 0
            self._retries[index] = 0
        return index

    def _totals(self) -> tuple[int, int]:
        newest = int(self._clock() / self._slot_s)
        oldest = newest - len(self._slot_ids) + 1
        requests = retries = 0
        for i, slot_id in enumerate(self._slot_ids):
            if oldest <= slot_id <= newest:
                requests += self._requests[i]
                retries += self._retries[i]
        return requests, retries

    def record_request(self) -> None:
        self._requests[self._slot()] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        requests, retries = self._totals()
        if retries >= self._min + requests * self.percent / 100:
            return False
        self._retries[self._slot()] += 1
        return True
