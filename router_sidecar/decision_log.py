"""The decision log: one structured JSON line per chat completion request.

`server.py` fills a `DecisionRecord` while the request runs (the engine appends lane attempts and
escalations to it) and calls `emit` once at the end, whatever the outcome. The line goes to the
logger `laneway.decisions` at INFO with the JSON object as its whole message, so any log shipper
can parse it. Keys are stable (camelCase, as in the config). The record never holds prompt text,
answers, user ids or secrets: only names from the config, counts, timings and reasons.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("laneway.decisions")


@dataclass
class LaneAttempt:
    """One call to (or skip of) a lane: `outcome` is ok, a fallback trigger, or a skip reason."""

    lane: str
    route: str
    outcome: str
    ms: float = 0.0
    status: int = 0
    retries: int = 0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lane": self.lane, "route": self.route, "outcome": self.outcome}
        if self.ms:
            out["ms"] = round(self.ms, 1)
        if self.status:
            out["status"] = self.status
        if self.retries:
            out["retries"] = self.retries
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class EscalationStep:
    from_route: str
    to_route: str
    reason: str
    detail: str = ""


@dataclass
class DecisionRecord:
    """Everything one request's log line says; filled in as the request runs."""

    decision_id: str
    policy: str = ""
    mode: str = ""
    config_version: str = ""
    requested_model: str = ""
    stream: bool = False
    rule: str | None = None
    score: int | None = None
    route: str = ""
    reason: str = ""
    enforce_route: str | None = None
    enforce_rule: str | None = None
    enforce_score: int | None = None
    enforce_lane: str | None = None
    enforce_cost_usd: float | None = None
    lane: str = ""
    outcome: str = ""
    status: int = 200
    error: str = ""
    attempts: list[LaneAttempt] = field(default_factory=list)
    escalations: list[EscalationStep] = field(default_factory=list)
    would_escalate: str | None = None
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_estimated: bool = False
    latency_ms: float = 0.0
    upstream_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decisionId": self.decision_id,
            "policy": self.policy,
            "mode": self.mode,
            "configVersion": self.config_version,
            "model": self.requested_model,
            "stream": self.stream,
            "rule": self.rule,
            "score": self.score,
            "route": self.route,
            "lane": self.lane,
            "reason": self.reason,
            "outcome": self.outcome,
            "status": self.status,
            "lanesTried": [a.as_dict() for a in self.attempts],
            "escalations": [
                {"from": e.from_route, "to": e.to_route, "reason": e.reason, "detail": e.detail}
                for e in self.escalations
            ],
            "fallbacks": self.fallbacks,
            "latencyMs": round(self.latency_ms, 1),
            "upstreamMs": round(self.upstream_ms, 1),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "costUsd": round(self.cost_usd, 8),
            "costEstimated": self.cost_estimated,
        }
        if self.mode == "observe":
            out["enforce"] = {
                "route": self.enforce_route,
                "rule": self.enforce_rule,
                "score": self.enforce_score,
                "lane": self.enforce_lane,
                "costUsd": (
                    round(self.enforce_cost_usd, 8) if self.enforce_cost_usd is not None else None
                ),
            }
        if self.would_escalate:
            out["wouldEscalate"] = self.would_escalate
        if self.error:
            out["error"] = self.error
        return out


def emit(record: DecisionRecord) -> None:
    """Write the record's line; skipped cheaply when the logger is off."""
    if log.isEnabledFor(logging.INFO):
        log.info("%s", json.dumps(record.as_dict(), separators=(",", ":")))
