"""The Markdown report of `laneway eval` (`report.md`) and the short summary printed to stdout.

`laneway.cmd_eval` calls `render_report` and `summary_lines` with the offline summary and, after
`--live`, the routing map and the graded answers. Pure: returns text, writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from laneway.evaluation.live import LaneAnswer
from laneway.evaluation.offline import SCORED, OfflineSummary
from laneway.evaluation.routing_map import ALL, FamilyMap, LaneStats, RoutingMap
from router_sidecar.config import RouterConfig

ROUTING_PNG = "routing.png"
COST_PNG = "cost-vs-pass.png"
ROUTES_CSV = "routes.csv"
ANSWERS_CSV = "live-results.csv"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class LiveRun:
    """The live part of a report: the graded answers and the routing map built from them."""

    answers: Sequence[LaneAnswer]
    routing_map: RoutingMap
    concurrency: int


# ---------------------------------------------------------------------------------------------
# Formatting helpers.


def usd(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.4f}" if value >= 0.01 else f"${value:.6f}"


def pct(value: float) -> str:
    return f"{value:.0%}"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _cell(value: object) -> str:
    text = "–" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)
    lines.append("")
    return lines


def _share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "0"


# ---------------------------------------------------------------------------------------------
# Offline sections.


def _head(config: RouterConfig, prompts_path: str, summary: OfflineSummary) -> list[str]:
    lines = [
        f"# Laneway eval: policy {config.policy_namespace}/{config.policy_name}",
        "",
        f"- prompts: {summary.total} from `{prompts_path}`",
        f"- policy config version: `{config.version}`, mode `{config.mode}`",
    ]
    if config.mode == "observe":
        lines.append(
            "- the policy is in `observe` mode, so the sidecar serves everything from "
            f"`{config.default_route}` today; the routes below are what `enforce` would choose"
        )
    lines.append(
        "- task family = the line's `family`, else `source_category`, else `task`, else "
        "`category`, else `unlabelled`"
    )
    if summary.unroutable:
        lines.append(
            f"- {summary.unroutable} prompts have no lane that can serve them on their route "
            "(missing capability, context window or budget); see `routes.csv`"
        )
    return [*lines, ""]


def _routes_section(config: RouterConfig, summary: OfflineSummary) -> list[str]:
    rows = [
        (
            route,
            ", ".join(config.routes[route].lanes),
            _share(summary.by_route.get(route, 0), summary.total),
            usd(summary.cost.per_route_total[route]),
        )
        for route in summary.routes
    ]
    return [
        "## Routes",
        "",
        *table(("route", "lanes", "prompts routed here", "est. cost of all prompts here"), rows),
    ]


def _family_section(summary: OfflineSummary) -> list[str]:
    headers = ("family", "prompts", *summary.routes)
    rows = [
        (family, counts.total(), *(counts.get(r, 0) for r in summary.routes))
        for family, counts in summary.by_family.items()
    ]
    return [
        "## Routes per task family",
        "",
        f"![routes per family]({ROUTING_PNG})",
        "",
        *table(headers, rows),
    ]


def _label_section(summary: OfflineSummary) -> list[str]:
    if not summary.by_label:
        return []
    lines = [
        "## Routes by label",
        "",
        "Labels with 2 to 12 distinct values; `meta.*` labels come from the line's `meta` object.",
        "",
    ]
    for label, values in summary.by_label.items():
        rows = [
            (value, counts.total(), *(counts.get(r, 0) for r in summary.routes))
            for value, counts in values.items()
        ]
        lines += [f"### {label}", "", *table(("value", "prompts", *summary.routes), rows)]
    return lines


def _rules_section(config: RouterConfig, summary: OfflineSummary) -> list[str]:
    routes = {rule.name: rule.route for rule in config.triage}
    ordered = [r.name for r in config.triage] + [SCORED]
    rows = [
        (name, routes.get(name, "by band"), _share(summary.rules.get(name, 0), summary.total))
        for name in ordered
    ]
    bands = {s: b.route for b in config.complexity.bands for s in range(b.min, b.max + 1)}
    unmatched = summary.scores.total()
    score_rows = [
        (
            score,
            bands.get(score, config.default_route),
            _share(summary.scores.get(score, 0), unmatched),
        )
        for score in range(1, 6)
    ]
    return [
        "## Rules that fired",
        "",
        *table(("rule", "route", "prompts"), rows),
        "## Complexity scores (prompts no rule matched)",
        "",
        *table(("score", "route", "prompts"), score_rows),
    ]


def _cost_section(summary: OfflineSummary) -> list[str]:
    cost = summary.cost
    return [
        "## Estimated cost",
        "",
        f"- as routed: {usd(cost.routed_total)}",
        f"- everything on the most expensive route (`{cost.baseline_route}`): "
        f"{usd(cost.baseline_total)}",
        f"- saving: {pct(cost.saving)}",
        "",
        "Estimates are the sidecar's own pre-call estimates: prompt tokens (about 4 characters "
        "per token) plus the request's `max_tokens`, or 1,000 output tokens when unset, at each "
        "lane's prices. `--live` measures real usage.",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Live sections.


def _live_head(run: LiveRun) -> list[str]:
    answers = run.answers
    called = [a for a in answers if a.called]
    judged = [a for a in answers if a.judge_lane]
    ungraded = sum(1 for a in answers if not a.graded)
    lines = [
        "## Live results",
        "",
        f"- calls: {len(called)} ({len(answers) - len(called)} prompt/lane pairs not called "
        f"because the sidecar would never send that prompt to that lane), at most "
        f"{run.concurrency} at a time",
        f"- lane errors: {sum(1 for a in called if a.error)}",
        f"- graded by a judge lane: {len(judged)} answers, judging cost "
        f"{usd(sum(a.judge_cost for a in judged))} (not included in lane costs)",
        f"- a lane passes a family when its pass rate is at least {pct(run.routing_map.threshold)}",
    ]
    if ungraded:
        lines.append(
            f"- **{ungraded} answers could not be graded** (the judge lane failed or its reply "
            "did not start with PASS or FAIL); they count as failures"
        )
    return [*lines, ""]


def _lane_rows(stats: Iterable[LaneStats]) -> list[tuple[object, ...]]:
    return [
        (
            s.lane,
            f"{s.passed}/{s.prompts} ({pct(s.pass_rate)})",
            usd(s.cost_per_prompt),
            usd(s.cost_per_success),
            ms(s.latency_p50_ms),
            ms(s.latency_p95_ms),
            s.errors,
        )
        for s in stats
    ]


LANE_HEADERS = ("lane", "passed", "cost/prompt", "cost/success", "p50", "p95", "errors")


def _map_rows(families: Iterable[FamilyMap]) -> list[tuple[object, ...]]:
    rows = []
    for fam in families:
        esc = fam.escalation
        rows.append(
            (
                fam.family,
                fam.prompts,
                ", ".join(f"{r} {n}" for r, n in fam.routed_routes.items()),
                pct(fam.routed.pass_rate),
                fam.cheapest_passing or "none",
                fam.fastest_passing or "none",
                fam.best or "none",
                f"{esc.rescued}/{esc.failures} rescued, {esc.silent} silent"
                if esc.failures
                else "–",
                _move(fam),
            )
        )
    return rows


def _move(fam: FamilyMap) -> str:
    rec = fam.recommendation
    if fam.family == ALL:
        return "–"
    if rec.action in ("up", "down"):
        return f"move {rec.action} to {rec.target}"
    return "no route passes" if rec.action == "none-passes" else "keep"


def _map_section(run: LiveRun) -> list[str]:
    rmap = run.routing_map
    headers = (
        "family",
        "prompts",
        "routed to",
        "routed pass",
        "cheapest passing",
        "fastest passing",
        "best",
        "escalation",
        "recommendation",
    )
    moves = [f for f in rmap.families if f.recommendation.action != "keep"]
    lines = [
        "## Routing map",
        "",
        f"![cost against pass rate]({COST_PNG})",
        "",
        *table(headers, _map_rows([*rmap.families, rmap.overall])),
        "Escalation: of the prompts whose routed answer failed, how many the policy's escalation "
        "path would have rescued; *silent* failures set off no escalation trigger.",
        "",
        "## Recommendations",
        "",
    ]
    if not moves:
        lines.append("Every family stays on its route.")
    lines += [f"- **{f.family}**: {_move(f)}: {f.recommendation.why}" for f in moves]
    return [*lines, ""]


def _per_lane_section(run: LiveRun) -> list[str]:
    rmap = run.routing_map
    lines = [
        "## Lanes over all prompts",
        "",
        *table(LANE_HEADERS, _lane_rows(rmap.overall.lanes)),
        "## Lanes per family",
        "",
    ]
    for fam in rmap.families:
        lines += [f"### {fam.family}", "", *table(LANE_HEADERS, _lane_rows(fam.lanes))]
    return lines


# ---------------------------------------------------------------------------------------------
# Public.


def render_report(
    config: RouterConfig,
    prompts_path: str,
    summary: OfflineSummary,
    live: LiveRun | None = None,
) -> str:
    lines = _head(config, prompts_path, summary)
    if live is not None:
        lines += _live_head(live) + _map_section(live)
    lines += _routes_section(config, summary) + _family_section(summary)
    lines += _rules_section(config, summary) + _cost_section(summary) + _label_section(summary)
    if live is not None:
        lines += _per_lane_section(live)
    return "\n".join(lines).rstrip() + "\n"


def _top(counts: Mapping[str, int] | Counter[str], total: int) -> str:
    return ", ".join(f"{name} {count / total:.0%}" for name, count in counts.items() if count)


def summary_lines(summary: OfflineSummary, live: LiveRun | None, out_dir: str) -> list[str]:
    """A few lines for stdout: the route split, the cost saving, and the moves to make."""
    ordered = {r: summary.by_route.get(r, 0) for r in summary.routes}
    lines = [
        f"{summary.total} prompts in {len(summary.by_family)} "
        f"{'family' if len(summary.by_family) == 1 else 'families'}; "
        f"routes: {_top(ordered, summary.total)}",
        f"estimated cost as routed {usd(summary.cost.routed_total)} vs "
        f"{usd(summary.cost.baseline_total)} all on {summary.cost.baseline_route} "
        f"(saving {pct(summary.cost.saving)})",
    ]
    if live is not None:
        overall = live.routing_map.overall
        lines.append(
            f"live: routed pass rate {pct(overall.routed.pass_rate)}; "
            f"best lane {overall.best or 'none'}; "
            f"cheapest passing {overall.cheapest_passing or 'none'}"
        )
        lines += [
            f"  {fam.family}: {_move(fam)}"
            for fam in live.routing_map.families
            if fam.recommendation.action != "keep"
        ]
    lines.append(f"report: {out_dir}/report.md")
    return lines
