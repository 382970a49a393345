"""The decision log: one structured JSON line per chat completion request.

`server.py` fills a `DecisionRecord` while the request runs (the engine appends lane attempts and
escalations to it) and calls `emit` once at the end, whatever the outcome. Keys are stable
(camelCase, as in the config). The record never holds prompt text, answers, user ids or secrets:
only names from the config, counts, timings and reasons.

`laneway serve` installs a `DecisionLines` writer (`write_lines_to`): each line is then one JSON
object alone on its line on standard output, apart from the diagnostic log on standard error, so
a log shipper reads it as JSON Lines. The writer batches: adding a line costs a couple of
microseconds instead of the logging module's fifteen or so, and the batch goes out at 64 KB,
a quarter of a second after its first line, and when the sidecar stops. Without a writer (the
demo, tests, code that embeds the router) the line goes to the logger `laneway.decisions` at
INFO, the JSON object being the whole message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from router_sidecar.fastjson import dumps

log = logging.getLogger("laneway.decisions")
diag = logging.getLogger(__name__)

BATCH_BYTES = 65536
BATCH_DELAY_S = 0.25


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


class DecisionLines:
    """Decision lines as JSON Lines on a file descriptor (standard output by default), batched.

    Writes are blocking writes of whole batches; one that fails is dropped with one WARNING per
    kind of failure (a log line is never worth a request)."""

    def __init__(
        self, fd: int = 1, *, batch_bytes: int = BATCH_BYTES, delay_s: float = BATCH_DELAY_S
    ) -> None:
        self._fd, self._batch_bytes, self._delay_s = fd, batch_bytes, delay_s
        self._parts: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._failures: set[str] = set()

    def add(self, line: bytes) -> None:
        """Queue one line (with its newline); sent with the batch."""
        self._parts.append(line)
        self._size += len(line)
        if self._size >= self._batch_bytes:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._delay_s, self.flush)

    def flush(self) -> None:
        """Send what is queued now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        data = memoryview(b"".join(self._parts))
        self._parts.clear()
        self._size = 0
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            kind = exc.strerror or type(exc).__name__
            if kind not in self._failures:
                self._failures.add(kind)
                diag.warning("Cannot write decision lines (%s); they are dropped until it "
                             "works again", kind)


_lines: DecisionLines | None = None


def write_lines_to(lines: DecisionLines | None) -> None:
    """Send decision lines to `lines` from now on, or (None) to the `laneway.decisions` logger."""
    global _lines
    if _lines is not None:
        _lines.flush()
    _lines = lines


def emit(record: DecisionRecord) -> None:
    """Write the record's line; skipped cheaply when the logger is off."""
    if _lines is not None:
        _lines.add(dumps(record.as_dict()) + b"\n")
    elif log.isEnabledFor(logging.INFO):
        log.info("%s", json.dumps(record.as_dict(), separators=(",", ":")))
