"""Circuit breaker, 429 cool-down and retry budget, driven by a fake clock."""

from __future__ import annotations

from router_sidecar.resilience import CLOSED, HALF_OPEN, OPEN, LaneGuards, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_the_configured_consecutive_failures() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    assert not guards.record_failure("a", threshold=3, cooldown_s=10)
    assert not guards.record_failure("a", threshold=3, cooldown_s=10)
    assert guards.unavailable("a") is None
    assert guards.record_failure("a", threshold=3, cooldown_s=10)
    assert guards.unavailable("a") == "circuitOpen"
    assert guards.state("a") == OPEN


def test_a_success_resets_the_consecutive_failure_count() -> None:
    guards = LaneGuards(Clock())
    guards.record_failure("a", threshold=2, cooldown_s=10)
    guards.record_success("a")
    assert not guards.record_failure("a", threshold=2, cooldown_s=10)
    assert guards.state("a") == CLOSED


def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    guards.record_failure("a", threshold=1, cooldown_s=5)
    clock.now += 5.1
    assert guards.state("a") == HALF_OPEN
    assert guards.acquire("a") is None  # the probe
    assert guards.acquire("a") == "probeInFlight"
    guards.record_success("a")
    assert guards.state("a") == CLOSED
    assert guards.acquire("a") is None and guards.acquire("a") is None


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    guards.record_failure("a", threshold=1, cooldown_s=5)
    clock.now += 6
    assert guards.acquire("a") is None
    assert guards.record_failure("a", threshold=1, cooldown_s=5)
    assert guards.unavailable("a") == "circuitOpen"
    clock.now += 6
    assert guards.acquire("a") is None


def test_a_released_probe_can_be_taken_by_the_next_request() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    guards.record_failure("a", threshold=1, cooldown_s=1)
    clock.now += 2
    assert guards.acquire("a") is None
    guards.release("a")  # the probing request was cancelled
    assert guards.acquire("a") is None


def test_rate_limit_cool_down_skips_the_lane_until_retry_after_has_passed() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    guards.cool_down("a", 2.0)
    assert guards.unavailable("a") == "coolingDown"
    clock.now += 1.9
    assert guards.unavailable("a") == "coolingDown"
    clock.now += 0.2
    assert guards.unavailable("a") is None


def test_success_reports_when_it_closed_a_half_open_circuit() -> None:
    clock = Clock()
    guards = LaneGuards(clock)
    assert not guards.record_success("a")
    guards.record_failure("a", threshold=1, cooldown_s=1)
    clock.now += 2
    guards.acquire("a")
    assert guards.record_success("a")
    assert guards.state("a") == CLOSED


def test_retry_budget_allows_the_floor_plus_a_percentage_of_requests() -> None:
    clock = Clock()
    budget = RetryBudget(percent=20, window_s=10, min_retries=2, clock=clock)
    for _ in range(50):
        budget.record_request()
    allowed = sum(budget.try_retry() for _ in range(100))
    assert allowed == 2 + 10


def test_retry_budget_refills_as_the_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(percent=10, window_s=10, min_retries=1, clock=clock)
    assert budget.try_retry()
    assert not budget.try_retry()
    clock.now += 11
    assert budget.try_retry()


def test_forgetting_a_lane_drops_its_state() -> None:
    guards = LaneGuards(Clock())
    guards.record_failure("gone", threshold=1, cooldown_s=60)
    guards.forget_except(["other"])
    assert guards.unavailable("gone") is None
