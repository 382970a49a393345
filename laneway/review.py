"""Production evidence from decision lines: per route and task family, is each route still right?

`laneway review` reads the JSON Lines a sidecar writes on standard output (decision lines, and
the `/v1/feedback` lines that join them on `decisionId`), as `kubectl logs` or a log store
returns them, and answers the routing guide's weekly questions from real traffic: was the first
route sufficient, do we escalate too often, which task families could move down a tier, which
quietly need a stronger one. Every finding names the numbers it rests on; a group with too little
evidence gets none. Nothing here reads prompt text: decision lines never hold any.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from laneway.stats import percentile

GROUP_KEYS = ("route", "task", "tier", "rule", "lane", "policy", "mode")
# Outcomes that are the router's failure to answer (the rest are the client's or the provider's
# refusal of the request itself, as in the chart's success-rate rule).
_FAILED = frozenset({"failed", "error"})
NONE = "-"


@dataclass
class Group:
    """What the decision lines of one group add up to."""

    key: tuple[str, ...]
    requests: int = 0
    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    # Requests that started on this group's route (its first route, before any escalation), and
    # how many of those were escalated away from it.
    started: int = 0
    escalated: int = 0
    fell_back: int = 0
    feedback: int = 0
    corrected: int = 0
    ids: list[str] = field(default_factory=list)

    @property
    def success(self) -> float | None:
        answered = self.ok + self.failed
        return self.ok / answered if answered else None

    @property
    def cost_per_success(self) -> float | None:
        return self.cost_usd / self.ok if self.ok else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.started if self.started else None

    @property
    def fallback_rate(self) -> float:
        return self.fell_back / self.requests if self.requests else 0.0

    @property
    def correction_rate(self) -> float | None:
        return self.corrected / self.feedback if self.feedback else None

    def percentile_ms(self, q: float) -> float | None:
        """A percentile of the answered requests' latency."""
        return percentile(self.latencies_ms, q)


@dataclass
class Observed:
    """Observe-mode lines: how often and at what estimated cost enforce would have differed."""

    requests: int = 0
    differ: int = 0
    served_cost_usd: float = 0.0
    enforce_cost_usd: float = 0.0


@dataclass
class Review:
    groups: list[Group]
    overall: Group
    findings: list[str]
    samples: dict[tuple[str, ...], list[str]]
    observed: Observed
    skipped_lines: int
    by: tuple[str, ...]


@dataclass
class Lines:
    """Decision lines by id, the last feedback given for each id, and lines that were neither."""

    decisions: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    feedback: dict[str, str] = field(default_factory=dict)
    skipped: int = 0


def read_lines(texts: Iterable[str], into: Lines | None = None) -> Lines:
    """Parse JSON Lines as a sidecar writes them. A prefix before the object (`kubectl logs
    --timestamps` or `--prefix`) is ignored; lines that are no decision or feedback are counted."""
    lines = into if into is not None else Lines()
    for text in texts:
        start = text.find("{")
        if start < 0:
            if text.strip():
                lines.skipped += 1
            continue
        try:
            obj = json.loads(text[start:])
        except ValueError:
            lines.skipped += 1
            continue
        decision_id = obj.get("decisionId") if isinstance(obj, dict) else None
        if not isinstance(decision_id, str):
            lines.skipped += 1
        elif "feedback" in obj:
            lines.feedback[decision_id] = str(obj["feedback"])
        elif "route" in obj:
            lines.decisions[decision_id] = obj
        else:
            lines.skipped += 1
    return lines


def _key(line: Mapping[str, Any], by: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(line.get(k) or NONE) for k in by)


def _with_route(key: tuple[str, ...], by: Sequence[str], route: Any) -> tuple[str, ...]:
    """`key` with its route replaced (unchanged when the groups are not by route)."""
    if "route" not in by:
        return key
    at = by.index("route")
    return (*key[:at], str(route), *key[at + 1 :])


def _add(group: Group, decision_id: str, line: Mapping[str, Any], feedback: str | None) -> None:
    group.requests += 1
    group.ids.append(decision_id)
    outcome = line.get("outcome")
    if outcome == "ok":
        group.ok += 1
        latency = line.get("latencyMs")
        if isinstance(latency, (int, float)):
            group.latencies_ms.append(float(latency))
    elif outcome in _FAILED:
        group.failed += 1
    cost = line.get("costUsd")
    if isinstance(cost, (int, float)):
        group.cost_usd += float(cost)
    if isinstance(line.get("fallbacks"), int) and line["fallbacks"] > 0:
        group.fell_back += 1
    if feedback is not None:
        group.feedback += 1
        group.corrected += feedback == "corrected"


def review(
    lines: Lines,
    by: Sequence[str] = ("route", "task"),
    *,
    sample: int = 0,
    seed: int = 0,
    min_feedback: int = 5,
    min_requests: int = 20,
) -> Review:
    """Group the decisions, add their feedback, and say what the numbers suggest."""
    groups: dict[tuple[str, ...], Group] = {}
    overall = Group(key=("all",))
    observed = Observed()
    def group_of(key: tuple[str, ...]) -> Group:
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key=key)
        return group

    for decision_id, line in lines.decisions.items():
        feedback = lines.feedback.get(decision_id)
        key = _key(line, by)
        _add(group_of(key), decision_id, line, feedback)
        _add(overall, decision_id, line, feedback)
        # Escalation counts on the route the request started on, not the one that served it.
        steps = line.get("escalations")
        escalated = isinstance(steps, list) and bool(steps)
        first = steps[0].get("from") if escalated and isinstance(steps[0], Mapping) else None
        start = _with_route(key, by, first) if first else key
        for group in (group_of(start), overall):
            group.started += 1
            group.escalated += escalated
        _observe(observed, line)
    ordered = sorted(groups.values(), key=lambda g: (-g.requests, g.key))
    rng = random.Random(seed)
    samples = {
        g.key: sorted(rng.sample(g.ids, min(sample, len(g.ids)))) for g in ordered if sample > 0
    }
    findings = _findings(ordered, overall, tuple(by), min_feedback, min_requests)
    findings += _observe_findings(observed)
    return Review(ordered, overall, findings, samples, observed, lines.skipped, tuple(by))


def _observe(observed: Observed, line: Mapping[str, Any]) -> None:
    enforce = line.get("enforce")
    if line.get("mode") != "observe" or not isinstance(enforce, Mapping):
        return
    observed.requests += 1
    observed.differ += enforce.get("route") != line.get("route")
    for attr, value in (("served_cost_usd", line.get("costUsd")),
                        ("enforce_cost_usd", enforce.get("costUsd"))):
        if isinstance(value, (int, float)):
            setattr(observed, attr, getattr(observed, attr) + float(value))


def _label(key: tuple[str, ...], by: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(by, key, strict=True))


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def _findings(
    groups: list[Group], overall: Group, by: tuple[str, ...], min_feedback: int,
    min_requests: int,
) -> list[str]:
    out: list[str] = []
    base = overall.correction_rate
    for g in groups:
        rate = g.correction_rate
        if _corrected_far_more(rate, base) and g.feedback >= min_feedback:
            out.append(
                f"{_label(g.key, by)}: {g.corrected} of {g.feedback} answers with feedback "
                f"were corrected ({_pct(rate or 0)}, against {_pct(base or 0)} overall). It may "
                "need a stronger route: a triage rule (taskIn, keywordsAny) or a higher band."
            )
        escalation = g.escalation_rate
        if g.started >= min_requests and escalation is not None and escalation > 0.30:
            out.append(
                f"{_label(g.key, by)}: {g.escalated} of the {g.started} requests that started "
                f"here were escalated ({_pct(escalation)}). Each paid for two answers and "
                "waited for both; starting them on the escalation target would be cheaper and "
                "faster."
            )
        success = g.success
        if g.requests >= min_requests and success is not None and success < 0.95:
            out.append(
                f"{_label(g.key, by)}: {_pct(success)} of the requests the router was "
                f"responsible for were answered ({g.failed} failed on every lane). Check the "
                "lanes' status and the fallback triggers."
            )
    if "route" in by and "task" in by:
        out += _cheaper_routes(groups, by, min_feedback)
    return out


def _corrected_far_more(rate: float | None, base: float | None) -> bool:
    """At least twice the overall correction rate and 10 points above it."""
    return rate is not None and base is not None and rate >= max(2 * base, base + 0.10)


def _cheaper_routes(groups: list[Group], by: tuple[str, ...], min_feedback: int) -> list[str]:
    """Task families served by several routes, where a cheaper route is corrected no more often."""
    route_at, task_at = by.index("route"), by.index("task")
    by_task: dict[str, list[Group]] = {}
    for g in groups:
        if g.key[task_at] != NONE and g.feedback >= min_feedback and g.cost_per_success:
            by_task.setdefault(g.key[task_at], []).append(g)
    out = []
    for task, candidates in sorted(by_task.items()):
        cheap = min(candidates, key=lambda g: g.cost_per_success or math.inf)
        for g in candidates:
            if g is cheap or (g.cost_per_success or 0) <= 1.5 * (cheap.cost_per_success or 0):
                continue
            if (cheap.correction_rate or 0) <= (g.correction_rate or 0) + 0.05:
                out.append(
                    f"task {task}: route {cheap.key[route_at]} costs "
                    f"${cheap.cost_per_success:.6f} per answer and is corrected "
                    f"{_pct(cheap.correction_rate or 0)} of the time; route {g.key[route_at]} "
                    f"costs ${g.cost_per_success:.6f} and is corrected "
                    f"{_pct(g.correction_rate or 0)}. Its {g.key[route_at]} traffic is a "
                    "candidate to move down a tier (try it in observe mode first)."
                )
    return out


def _observe_findings(observed: Observed) -> list[str]:
    if not observed.requests:
        return []
    text = (
        f"observe mode: enforce would have chosen another route for {observed.differ} of "
        f"{observed.requests} requests"
    )
    if observed.served_cost_usd > 0:
        change = observed.enforce_cost_usd / observed.served_cost_usd - 1
        text += (
            f"; serving each on enforce's first lane would have cost an estimated "
            f"${observed.enforce_cost_usd:.6f} against ${observed.served_cost_usd:.6f} spent "
            f"({'+' if change >= 0 else ''}{change * 100:.0f} %)"
        )
    return [text + "."]


# ---------------------------------------------------------------------------------------------
# Output.


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _maybe_pct(value: float | None) -> str:
    return "-" if value is None else _pct(value)


def render_markdown(result: Review) -> str:
    """The review as Markdown: a table of the groups, the findings, the samples."""
    head = [*result.by, "requests", "success", "p50 ms", "p95 ms", "cost / success",
            "escalated from", "fell back", "feedback", "corrected"]
    rows = [*result.groups, result.overall]
    out = [
        f"# Routing review: {result.overall.requests} decisions, "
        f"{result.overall.feedback} with feedback",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" if i < len(result.by) else "---:" for i in range(len(head))) + " |",
    ]
    for g in rows:
        key = list(g.key) if g is not result.overall else ["**all**"] + [""] * (len(result.by) - 1)
        cost = g.cost_per_success
        cells = [
            *key, str(g.requests), _maybe_pct(g.success), _ms(g.percentile_ms(0.50)),
            _ms(g.percentile_ms(0.95)), "-" if cost is None else f"${cost:.6f}",
            _maybe_pct(g.escalation_rate), _pct(g.fallback_rate), str(g.feedback),
            _maybe_pct(g.correction_rate),
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Findings", ""]
    out += [f"- {f}" for f in result.findings] or ["- nothing stands out in these numbers"]
    if result.samples:
        out += ["", "## Decisions to read (a random sample per group)", ""]
        for key, ids in result.samples.items():
            out.append(f"- {_label(key, result.by)}: {', '.join(ids)}")
    if result.skipped_lines:
        out += ["", f"{result.skipped_lines} line(s) were not decision or feedback lines and "
                "were left out."]
    return "\n".join(out) + "\n"


def as_json(result: Review) -> dict[str, Any]:
    def group(g: Group) -> dict[str, Any]:
        key = {} if g is result.overall else dict(zip(result.by, g.key, strict=True))
        return {
            **key,
            "requests": g.requests, "ok": g.ok, "failed": g.failed,
            "success": g.success, "p50Ms": g.percentile_ms(0.50), "p95Ms": g.percentile_ms(0.95),
            "costUsd": round(g.cost_usd, 8), "costPerSuccessUsd": g.cost_per_success,
            "started": g.started, "escalated": g.escalated, "fellBack": g.fell_back,
            "feedback": g.feedback, "corrected": g.corrected,
        }

    return {
        "by": list(result.by),
        "groups": [group(g) for g in result.groups],
        "overall": group(result.overall),
        "findings": result.findings,
        "samples": [
            {**dict(zip(result.by, key, strict=True)), "decisionIds": ids}
            for key, ids in result.samples.items()
        ],
        "observe": {
            "requests": result.observed.requests,
            "enforceWouldDiffer": result.observed.differ,
            "servedCostUsd": round(result.observed.served_cost_usd, 8),
            "enforceCostUsd": round(result.observed.enforce_cost_usd, 8),
        },
        "skippedLines": result.skipped_lines,
    }
