"""The decision log: one structured JSON line per chat completion request.

`server.py` fills a `DecisionRecord` while the request runs (the engine appends lane attempts and
escalations to it) and calls `emit` once at the end, whatever the outcome. Keys are stable
(camelCase, as in the config). The record never holds prompt text, answers, user ids or secrets:
only names from the config, counts, timings and reasons.

`laneway serve` installs a `DecisionLines` writer (`write_lines_to`): each line is then one JSON
object alone on its line on standard output, apart from the diagnostic log on standard error, so
a log shipper reads it as JSON Lines. The writer batches: adding a line costs a couple of
microseconds instead of the logging module's fifteen or so, and the batch goes out at 64 KB,
a quarter of a second after its first line, and when the sidecar stops, written by a thread of
its own so that a slow reader never holds up a request. Without a writer (the
demo, tests, code that embeds the router) the line goes to the logger `laneway.decisions` at
INFO, the JSON object being the whole message. `/v1/feedback` lines (`emit_feedback`) take the
same way (their logger is `laneway.feedback`), so both join on `decisionId` in one stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from router_sidecar.fastjson import dumps

log = logging.getLogger("laneway.decisions")
feedback_log = logging.getLogger("laneway.feedback")
diag = logging.getLogger(__name__)

BATCH_BYTES = 65536
BATCH_DELAY_S = 0.25
MAX_PENDING_BYTES = 4 * 1024 * 1024


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
    # The request's hints (short names, lower-cased), so lines group by task family and tier.
    tier: str | None = None
    task: str | None = None
    risk: str | None = None
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
    # Calls to the selfCheck lane: lane, route, verdict (pass, fail, error), ms, detail. A tuple,
    # so the usual request (no check) allocates nothing for it.
    self_checks: tuple[dict[str, Any], ...] = ()
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
            "tier": self.tier,
            "task": self.task,
            "risk": self.risk,
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
        if self.self_checks:
            out["selfChecks"] = list(self.self_checks)
        if self.error:
            out["error"] = self.error
        return out


class DecisionLines:
    """Decision lines as JSON Lines on a file descriptor (standard output by default), batched.

    The request path never waits for the output: a batch is handed to a writer thread, which
    does the blocking writes. When the reader falls behind by more than `max_pending_bytes`
    (stalled log collection), new batches are dropped and counted in `dropped`, with a WARNING
    when that starts and one when the reader has caught up; a failed write drops its batch with
    one WARNING per kind of failure. A log line is never worth a request."""

    def __init__(
        self,
        fd: int = 1,
        *,
        batch_bytes: int = BATCH_BYTES,
        delay_s: float = BATCH_DELAY_S,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self._fd, self._batch_bytes, self._delay_s = fd, batch_bytes, delay_s
        self._max_pending = max_pending_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._failures: set[str] = set()
        self._pending = 0  # bytes handed to the writer, not written yet
        self._lock = threading.Lock()
        self.dropped = 0  # lines left out because the reader fell behind
        self._stalled = False
        self._batches: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_batches, name="decision-lines",
                                         daemon=True)
        self._writer.start()

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
        """Hand what is queued to the writer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        data = b"".join(self._parts)
        lines = len(self._parts)
        self._parts.clear()
        self._size = 0
        with self._lock:
            if self._pending + len(data) > self._max_pending:
                self.dropped += lines
                stalled, self._stalled = self._stalled, True
            else:
                self._pending += len(data)
                stalled = None
        if stalled is None:
            self._batches.put(data)
        elif not stalled:
            diag.warning("The decision-line output is not being read (over %d bytes waiting); "
                         "lines are dropped until it catches up", self._max_pending)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued and wait (up to `timeout_s`) for the writer to finish."""
        self.flush()
        self._batches.put(None)
        self._writer.join(timeout_s)

    def _write_batches(self) -> None:
        while (data := self._batches.get()) is not None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                kind = exc.strerror or type(exc).__name__
                if kind not in self._failures:
                    self._failures.add(kind)
                    diag.warning("Cannot write decision lines (%s); they are dropped until it "
                                 "works again", kind)
            with self._lock:
                self._pending -= len(data)
                if self._stalled and self._pending == 0:
                    self._stalled = False
                    diag.warning("The decision-line output is read again; %d lines were "
                                 "dropped so far", self.dropped)


_lines: DecisionLines | None = None


def write_lines_to(lines: DecisionLines | None) -> None:
    """Send decision lines to `lines` from now on, or (None) to the `laneway.decisions` logger;
    the writer used so far sends what it holds and stops."""
    global _lines
    previous, _lines = _lines, lines
    if previous is not None:
        previous.close()


def emit(record: DecisionRecord) -> None:
    """Write the record's line; skipped cheaply when the logger is off."""
    if _lines is not None or log.isEnabledFor(logging.INFO):
        _write(record.as_dict(), log)


def emit_feedback(decision_id: str, outcome: str) -> None:
    """Write a `/v1/feedback` line, `{"decisionId": ..., "feedback": ...}`, where decision lines
    go (the logger `laneway.feedback` without a writer), so the two join on `decisionId`."""
    _write({"decisionId": decision_id, "feedback": outcome}, feedback_log)


def _write(line: dict[str, Any], logger: logging.Logger) -> None:
    """One JSON line to the installed writer, else to `logger` at INFO."""
    if _lines is not None:
        _lines.add(dumps(line) + b"\n")
    elif logger.isEnabledFor(logging.INFO):
        logger.info("%s", json.dumps(line, separators=(",", ":")))
