"""Small statistics shared by the command's reports (`demo`, `eval`, `review`)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The value at `fraction` (0..1) of the sorted values, by the nearest index; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]
