"""PNG charts for `laneway eval`: routes per family, and cost against pass rate per lane.

`laneway.cmd_eval` calls `routing_chart` (offline and live) and `cost_vs_pass_chart` (live only).
Figures are drawn with matplotlib's object API on the Agg canvas, so no display, no pyplot global
state and no backend selection are involved. matplotlib is the optional `eval` extra; callers
check `available()` first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# More bars than this do not read; the smallest families are merged into one "other" bar.
MAX_FAMILY_BARS = 30
# Family names are printed next to their points only when there are this few.
MAX_POINT_LABELS = 12


@dataclass(frozen=True)
class CostPoint:
    """One lane on one family (or on every prompt, when `family` is None)."""

    lane: str
    family: str | None
    cost_per_prompt: float
    pass_rate: float


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _top_families(
    counts: Mapping[str, Mapping[str, int]], routes: Sequence[str]
) -> list[tuple[str, dict[str, int]]]:
    """Families by size, largest first; past MAX_FAMILY_BARS the rest are summed into one."""
    ordered = sorted(counts, key=lambda fam: (-sum(counts[fam].values()), fam))
    bars = [(fam, dict(counts[fam])) for fam in ordered[:MAX_FAMILY_BARS]]
    rest = ordered[MAX_FAMILY_BARS:]
    if rest:
        merged = {r: sum(counts[fam].get(r, 0) for fam in rest) for r in routes}
        bars.append((f"other ({len(rest)} families)", merged))
    return bars


def routing_chart(
    path: str, counts: Mapping[str, Mapping[str, int]], routes: Sequence[str], title: str
) -> None:
    """A horizontal bar per family, split by the share of its prompts each route got; the
    family's prompt count is in its label."""
    bars = list(reversed(_top_families(counts, routes)))
    figure, axes = _figure(10, max(3.0, 1.2 + 0.32 * len(bars)))
    names = [f"{_short(fam)} ({sum(by_route.values())})" for fam, by_route in bars]
    left = [0.0] * len(bars)
    for route in routes:
        widths = [
            100 * by_route.get(route, 0) / max(1, sum(by_route.values())) for _, by_route in bars
        ]
        axes.barh(names, widths, left=left, label=route)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_xlim(0, 100)
    axes.set_xlabel("share of the family's prompts (%)")
    axes.set_title(title)
    figure.legend(title="route", loc="outside right upper", fontsize="small")
    axes.tick_params(axis="y", labelsize="small")
    figure.savefig(path, format="png")


def cost_vs_pass_chart(path: str, points: Sequence[CostPoint], title: str) -> None:
    """Cost per prompt (x) against pass rate (y): a large marker per lane over all prompts,
    small markers per lane and family."""
    figure, axes = _figure(9, 6)
    lanes = list(dict.fromkeys(p.lane for p in points))
    families = sorted({p.family for p in points if p.family is not None})
    colours = {lane: f"C{i % 10}" for i, lane in enumerate(lanes)}
    for lane in lanes:
        mine = [p for p in points if p.lane == lane and p.family is not None]
        axes.scatter(
            [p.cost_per_prompt for p in mine],
            [p.pass_rate * 100 for p in mine],
            s=24,
            alpha=0.6,
            color=colours[lane],
        )
        if len(families) <= MAX_POINT_LABELS:
            for p in mine:
                axes.annotate(
                    _short(p.family or "", 24),
                    (p.cost_per_prompt, p.pass_rate * 100),
                    fontsize="x-small",
                    xytext=(4, 2),
                    textcoords="offset points",
                )
    for p in points:
        if p.family is None:
            axes.scatter(
                [p.cost_per_prompt],
                [p.pass_rate * 100],
                s=140,
                marker="D",
                color=colours[p.lane],
                edgecolors="black",
                label=f"{p.lane} (all prompts)",
            )
    costs = [p.cost_per_prompt for p in points if p.cost_per_prompt > 0]
    if costs and len(costs) == len(points) and max(costs) / min(costs) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("cost per prompt (USD)")
    axes.set_ylabel("pass rate (%)")
    axes.set_ylim(-5, 105)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")
    figure.savefig(path, format="png")
