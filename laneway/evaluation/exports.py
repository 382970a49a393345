"""Machine-readable outputs of `laneway eval`: per-prompt CSVs and `summary.json`.

`laneway.cmd_eval` calls `write_routes_csv`, `write_answers_csv` (after `--live`) and
`summary_document`. The CSVs have one row per prompt (routes) or per prompt and lane (answers);
`summary.json` holds every number the Markdown report shows, with camelCase keys.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

from laneway.evaluation.live import LaneAnswer
from laneway.evaluation.offline import OfflineSummary, RoutedPrompt
from laneway.evaluation.routing_map import FamilyMap, LaneStats, RoutingMap
from router_sidecar.config import RouterConfig

ROUTE_COLUMNS = (
    "id",
    "line",
    "family",
    "route",
    "lane",
    "rule",
    "score",
    "estimated_cost_usd",
    "reason",
)
ANSWER_COLUMNS = (
    "id",
    "family",
    "lane",
    "routed_lane",
    "called",
    "passed",
    "reason",
    "escalation_trigger",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "error",
    "judge_lane",
    "judge_cost_usd",
)


def write_routes_csv(path: str, routed: Sequence[RoutedPrompt]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ROUTE_COLUMNS)
        for item in routed:
            cost = item.estimated_cost
            writer.writerow(
                (
                    item.prompt.id,
                    item.prompt.line,
                    item.prompt.family,
                    item.route,
                    item.lane or "",
                    item.rule or "",
                    "" if item.score is None else item.score,
                    "" if cost is None else f"{cost:.8f}",
                    item.reason,
                )
            )


def write_answers_csv(
    path: str, routed: Sequence[RoutedPrompt], answers: Sequence[LaneAnswer]
) -> None:
    routed_lane = {item.prompt.id: item.lane for item in routed}
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ANSWER_COLUMNS)
        for a in answers:
            writer.writerow(
                (
                    a.prompt_id,
                    a.family,
                    a.lane,
                    "yes" if routed_lane.get(a.prompt_id) == a.lane else "no",
                    "yes" if a.called else "no",
                    "yes" if a.passed else "no",
                    a.reason,
                    a.trigger or "",
                    f"{a.latency_ms:.1f}",
                    a.input_tokens,
                    a.output_tokens,
                    f"{a.cost:.8f}",
                    a.error or "",
                    a.judge_lane or "",
                    f"{a.judge_cost:.8f}",
                )
            )


def _lane_doc(s: LaneStats) -> dict[str, Any]:
    return {
        "lane": s.lane,
        "prompts": s.prompts,
        "passed": s.passed,
        "passRate": s.pass_rate,
        "costPerPrompt": s.cost_per_prompt,
        "costPerSuccess": s.cost_per_success,
        "latencyP50Ms": s.latency_p50_ms,
        "latencyP95Ms": s.latency_p95_ms,
        "errors": s.errors,
    }


def _family_doc(fam: FamilyMap) -> dict[str, Any]:
    esc, rec = fam.escalation, fam.recommendation
    return {
        "family": fam.family,
        "prompts": fam.prompts,
        "routedRoutes": dict(fam.routed_routes),
        "routedPassRate": fam.routed.pass_rate,
        "routedCostPerPrompt": fam.routed.cost_per_prompt,
        "cheapestPassing": fam.cheapest_passing,
        "fastestPassing": fam.fastest_passing,
        "best": fam.best,
        "escalation": {
            "failures": esc.failures,
            "escalated": esc.escalated,
            "rescued": esc.rescued,
            "silent": esc.silent,
        },
        "recommendation": {"action": rec.action, "target": rec.target, "why": rec.why},
        "routes": {
            r.route: {"passRate": r.pass_rate, "costPerPrompt": r.cost_per_prompt}
            for r in fam.routes
        },
        "lanes": [_lane_doc(s) for s in fam.lanes],
    }


def _counts(table: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {key: dict(counts) for key, counts in table.items()}


def summary_document(
    config: RouterConfig, summary: OfflineSummary, routing_map: RoutingMap | None
) -> dict[str, Any]:
    cost = summary.cost
    doc: dict[str, Any] = {
        "policy": {"name": config.policy_name, "namespace": config.policy_namespace},
        "configVersion": config.version,
        "mode": config.mode,
        "prompts": summary.total,
        "routes": {r: summary.by_route.get(r, 0) for r in summary.routes},
        "families": _counts(summary.by_family),
        "labels": {label: _counts(values) for label, values in summary.by_label.items()},
        "rules": dict(summary.rules),
        "scores": {str(score): n for score, n in sorted(summary.scores.items())},
        "unroutable": summary.unroutable,
        "estimatedCost": {
            "routed": cost.routed_total,
            "perRoute": dict(cost.per_route_total),
            "baselineRoute": cost.baseline_route,
            "baseline": cost.baseline_total,
            "saving": cost.saving,
        },
    }
    if routing_map is not None:
        doc["live"] = {
            "passThreshold": routing_map.threshold,
            "families": [_family_doc(f) for f in routing_map.families],
            "overall": _family_doc(routing_map.overall),
        }
    return doc
