"""The explain object: a routing decision rendered for people and machines.

`POST /v1/route/explain` answers with it, `laneway explain --json` prints it, and `laneway eval`
reads it. It holds the SPEC's required keys (`route`, `lane`, `rule`, `score`, `reasons`) plus
everything that led there and what would happen next: the enforce-mode choice, signals, every
triage rule, candidate and skipped lanes, and the escalation and fallback that could follow.

The object is plain JSON (no sets, no floats that vary by run) and deterministic: the same config
and decision give the same object. It never holds prompt text.
"""

from __future__ import annotations

from typing import Any

from router_sidecar.config import ESCALATION_TRIGGERS, FALLBACK_TRIGGERS, RouterConfig
from router_sidecar.decision import Decision, RuleTrace, escalation_target

COST_DIGITS = 8


def _rules(config: RouterConfig, decision: Decision) -> list[dict[str, Any]]:
    """Every triage rule: how it was evaluated, or why it was not."""
    if decision.forced:
        why = "not evaluated: the request named a route or lane"
        return [_rule_row(r.name, r.route, None, why) for r in config.triage]
    rows = [_trace_row(step) for step in decision.trace]
    why = "not evaluated: an earlier rule matched"
    rows.extend(_rule_row(r.name, r.route, None, why) for r in config.triage[len(decision.trace) :])
    return rows


def _trace_row(step: RuleTrace) -> dict[str, Any]:
    return _rule_row(step.name, step.route, step.matched, step.detail)


def _rule_row(name: str, route: str, matched: bool | None, detail: str) -> dict[str, Any]:
    return {
        "name": name,
        "route": route,
        "evaluated": matched is not None,
        "matched": bool(matched),
        "detail": detail,
    }


def _path_from(config: RouterConfig, route: str) -> list[str]:
    """The routes an answer could escalate through, in order, starting after `route`."""
    path: list[str] = []
    current = escalation_target(config, route)
    while current is not None and current not in path and current != route:
        path.append(current)
        current = escalation_target(config, current)
    return path


def _escalation(config: RouterConfig, decision: Decision) -> dict[str, Any]:
    esc = config.escalation
    path = _path_from(config, decision.route)
    return {
        "triggers": [t for t in ESCALATION_TRIGGERS if t in esc.triggers],
        "uncertaintyMarkers": list(esc.uncertainty_markers),
        "maxEscalations": esc.max_escalations,
        "nextRoute": path[0] if path and esc.max_escalations > 0 else None,
        "path": path[: esc.max_escalations],
        "toolFailureThreshold": esc.tool_failure_threshold,
        "lowRiskLevels": sorted(esc.low_risk_levels),
        "latencyBudgetMs": decision.signals.latency_budget_ms or config.latency_budget_ms,
        "selfCheckLane": esc.self_check.lane if esc.self_check else None,
    }


def _fallback(config: RouterConfig, decision: Decision) -> dict[str, Any]:
    fb = config.fallback
    return {
        "triggers": [t for t in FALLBACK_TRIGGERS if t in fb.triggers],
        "retries": {"max": fb.retries_max, "backoffMs": fb.backoff_ms},
        "retryBudgetPercent": fb.retry_budget_percent,
        "circuitBreaker": {
            "consecutiveFailures": fb.breaker_failures,
            "cooldownMs": fb.breaker_cooldown_ms,
        },
        "nextLanes": list(decision.lanes[1:]),
    }


def _lanes(config: RouterConfig, decision: Decision) -> list[dict[str, Any]]:
    rows = []
    for name in decision.lanes:
        lane = config.lanes[name]
        rows.append(
            {
                "lane": name,
                "model": lane.provider.model,
                "provider": lane.provider.type,
                "phase": lane.phase,
                "estimatedCostUsd": round(decision.estimated_cost.get(name, 0.0), COST_DIGITS),
            }
        )
    return rows


def explain(config: RouterConfig, decision: Decision) -> dict[str, Any]:
    """The explain object for one decision (JSON-serialisable, deterministic)."""
    return {
        "route": decision.route,
        "lane": decision.lanes[0] if decision.lanes else None,
        "rule": decision.rule,
        "score": decision.score,
        "reasons": list(decision.reasons),
        "reason": decision.reason,
        "mode": decision.mode,
        "model": decision.requested_model,
        "forced": decision.forced,
        "forcedKind": decision.forced_kind,
        "policy": {"name": config.policy_name, "namespace": config.policy_namespace},
        "configVersion": config.version,
        "enforce": {
            "route": decision.enforce_route,
            "rule": decision.enforce_rule,
            "score": decision.enforce_score,
        },
        "signals": decision.signals.as_dict(),
        "rules": _rules(config, decision),
        "complexity": {
            "base": config.complexity.base,
            "matched": [{"signal": n, "weight": w} for n, w in decision.score_parts],
        },
        "lanes": _lanes(config, decision),
        "lastResort": decision.last_resort,
        "skipped": [{"lane": lane, "reason": why} for lane, why in decision.skipped],
        "escalation": _escalation(config, decision),
        "fallback": _fallback(config, decision),
    }
