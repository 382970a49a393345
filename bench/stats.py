"""Statistics for the benchmark: percentiles of one round, medians and ratios across rounds.

Pure functions with no I/O; `bench.run` feeds them the samples of each round and `bench.report`
turns their results into the table. Every measurement is repeated in interleaved rounds, and a
figure quoted in the report is the median over rounds of that round's value (or of that round's
difference to, or ratio with, the direct upstream measured in the same round), so one noisy
round on a shared machine cannot move it much.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0..100) of `samples`, linearly interpolated between ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class LatencySummary:
    """One round of sequential requests at one connection, in milliseconds."""

    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


def summarise_latency(samples_s: Sequence[float], errors: int = 0) -> LatencySummary:
    """Summarise request durations given in seconds."""
    ms = [s * 1000 for s in samples_s]
    return LatencySummary(
        count=len(ms),
        errors=errors,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms),
    )


Round = Mapping[str, float | None]


def _values(rounds: Sequence[Round], key: str) -> list[float]:
    return [v for r in rounds if (v := r.get(key)) is not None]


def _pairs(
    target: Sequence[Round], baseline: Sequence[Round], key: str
) -> list[tuple[float, float]]:
    """(target, baseline) values of `key` for the rounds where both have one, paired by position."""
    pairs = []
    for t, b in zip(target, baseline, strict=False):
        tv, bv = t.get(key), b.get(key)
        if tv is not None and bv is not None:
            pairs.append((tv, bv))
    return pairs


def median_of(rounds: Sequence[Round], key: str) -> float | None:
    """Median of `key` over the rounds that have it; None when no round has it."""
    values = _values(rounds, key)
    return median(values) if values else None


def median_difference(target: Sequence[Round], baseline: Sequence[Round], key: str) -> float | None:
    """Median over rounds of `target[key] - baseline[key]`; None when no round pairs up."""
    diffs = [t - b for t, b in _pairs(target, baseline, key)]
    return median(diffs) if diffs else None


def median_ratio(target: Sequence[Round], baseline: Sequence[Round], key: str) -> float | None:
    """Median over rounds of `target[key] / baseline[key]`; None when no round pairs up."""
    ratios = [t / b for t, b in _pairs(target, baseline, key) if b]
    return median(ratios) if ratios else None


def median_cpu_per_request_us(rounds: Sequence[Round], cpu_key: str, rps_key: str) -> float | None:
    """Median over rounds of the CPU one request took, in microseconds of one core: `cpu_key` is
    the share of a core in percent while `rps_key` requests per second were served."""
    costs = []
    for r in rounds:
        cpu, rps = r.get(cpu_key), r.get(rps_key)
        if cpu is not None and rps:
            costs.append(cpu / 100 / rps * 1e6)
    return median(costs) if costs else None
