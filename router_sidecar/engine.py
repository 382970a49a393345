"""Executes a routing decision: calls lanes in order, retries, falls back, escalates, streams.

`server.py` builds one `Engine` per application and, per chat completion request, a `Run` holding
the config object the request started with, its body, signals and decision. `Engine.complete`
serves a non-streaming request and returns the answer; `Engine.stream` serves a streaming one
through a callback that opens the client's response only once the first upstream chunk is in hand.
Both raise `errors.RouterError` for anything the client must see as an error. Provider calls go
through the engine's `upstream.Upstreams` (keep-alive pools per provider host); each read of a
stream's body goes to the adapter's `providers.base.StreamTranslator`, and the frames it gives for
that read reach the client in one write.

Per lane: the circuit breaker and 429 cool-down in `resilience.LaneGuards` decide whether it may be
called; a failure is classified (`errors.classify_*`) into a fallback trigger; a trigger listed in
`fallback.triggers` moves the request to the next lane, anything else is returned to the client.
`serverError` and `connectionError` are first retried on the same lane with jittered exponential
backoff, within the request's deadline and while the retry budget allows. A `contextOverflow`
skips later lanes whose context window is no larger. A finished non-streaming answer goes through
`checks.check_answer`; when a trigger fires, the request moves along the escalation path (see
docs/escalation.md for exactly what applies to streams). What each lane call did, cost and
counted as (attempt records, tokens, fallbacks) is recorded through `bookkeeping`; `Run`,
`LaneAnswer` and `LaneFailed` live there and are imported from here too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from router_sidecar import errors, fastjson
from router_sidecar.bookkeeping import (
    HEALTH_SKIPS,
    LaneAnswer,
    LaneFailed,
    Run,
    health_skipped_ahead,
    lane_attempt,
    no_lane,
    outcomes,
)
from router_sidecar.checks import check_answer, is_refusal, tool_call_problem
from router_sidecar.config import Lane, RouterConfig
from router_sidecar.decision import LaneScreen, escalation_target, screen_lanes
from router_sidecar.decision_log import EscalationStep, LaneAttempt
from router_sidecar.metrics import Metrics
from router_sidecar.providers import adapter_for
from router_sidecar.providers.base import (
    ProviderAdapter,
    StreamError,
    StreamTranslator,
    UpstreamRequest,
    wants_usage,
)
from router_sidecar.providers.openai import answer_chars
from router_sidecar.resilience import LaneGuards, RetryBudget
from router_sidecar.secrets import SecretStore
from router_sidecar.self_check import SelfChecker
from router_sidecar.upstream import Response, UpstreamError, Upstreams

log = logging.getLogger(__name__)

T = TypeVar("T")

# Triggers worth a second try on the same lane; the others move on at once (a timeout has used
# the lane's time already, a 429 says when to come back, an overflow or refusal will repeat).
RETRYABLE = frozenset({errors.SERVER_ERROR, errors.CONNECTION_ERROR})
DEFAULT_COOL_DOWN_S = 1.0
DEADLINE_PASSED = "deadlinePassed"
_CONNECTIONS_PER_HOST = 256
_KEEPALIVE_S = 30.0


@dataclass
class OpenStream:
    """A stream whose first frames have arrived; the rest is read by `Engine.stream`."""

    lane: Lane
    response: Response
    translator: StreamTranslator
    sent_at: float
    # The frames of the read that brought the first one, not sent yet, and the provider's error
    # in a later event of that read, if any.
    first: bytes = b""
    failure: StreamError | None = None
    ended: bool = False

    async def next_frames(self) -> bytes | None:
        """The frames for the next upstream read (perhaps none); None once the body has ended.
        Raises `StreamError` as the translator does."""
        if self.ended:
            return None
        chunk = await self.response.next_chunk()
        if not chunk:
            self.ended = True
            return self.translator.close()
        return self.translator.read(chunk)

    def close(self, clean: bool) -> None:
        if clean:
            self.response.release()
        else:
            self.response.close()


class StreamSink(Protocol):
    """The client's side of a stream: `server.py` prepares the response on the first write;
    `last` marks the stream's final frames (the response may end with them)."""

    async def write(self, data: bytes, *, last: bool = False) -> None: ...


# A call to one lane for a run, given the seconds it may take (the lane's timeout, or less in a
# budget).
Call = Callable[[Run, Lane, float], Awaitable[T]]


class Engine:
    """Long-lived: owns the upstream connection pools, lane guards and retry budget."""

    def __init__(self, metrics: Metrics, secrets: SecretStore | None = None) -> None:
        self.metrics = metrics
        self.secrets = secrets
        self.guards = LaneGuards()
        self._lanes: tuple[str, ...] = ()
        metrics.lane_states = self.lane_states
        self.budget = RetryBudget(percent=20)
        self.upstreams = Upstreams(limit=_CONNECTIONS_PER_HOST, keepalive_s=_KEEPALIVE_S)
        self._rng = random.Random()
        self.self_checker = SelfChecker(self._post, self._api_key, self.lane_unavailable, metrics)

    # -- lifecycle ------------------------------------------------------------------------------

    def config_applied(self, config: RouterConfig) -> None:
        """Follow a new config: retry budget size, forgotten lanes, metrics."""
        self.budget.percent = config.fallback.retry_budget_percent
        self.guards.forget_except(config.lanes)
        self._lanes = tuple(config.lanes)
        self.metrics.set_config(config.version, self.lane_states())

    def lane_states(self) -> dict[str, str]:
        return {name: self.guards.state(name) for name in self._lanes}

    async def close(self) -> None:
        self.upstreams.close()

    def lane_unavailable(self, lane: str) -> str | None:
        return self.guards.unavailable(lane)

    def _api_key(self, lane: Lane) -> str | None:
        return self.secrets.key_for(lane.name) if self.secrets is not None else None

    def _post(
        self, lane: Lane, req: UpstreamRequest, total_s: float, early_s: float | None = None
    ) -> Awaitable[Response]:
        """Send the provider request; `total_s` runs until the body's end, `early_s` until
        `Response.lift_early_deadline`."""
        body = fastjson.dumps(req.payload)
        first_s = total_s if early_s is None else min(early_s, total_s)
        return self.upstreams.post(
            req.url,
            req.headers,
            body,
            connect_s=min(lane.connect_ms / 1000, first_s),
            total_s=total_s,
            early_s=early_s,
        )

    # -- non-streaming --------------------------------------------------------------------------

    async def complete(self, run: Run) -> LaneAnswer:
        """Serve a non-streaming request, escalating finished answers when a check fires."""
        self.budget.record_request()
        route, lanes, skipped = run.decision.route, run.decision.lanes, run.decision.skipped
        if skipped:
            run.note_skipped(route, skipped)
        best: LaneAnswer | None = None
        while True:
            try:
                got = await self._try_lanes(run, route, lanes, skipped, self._call_answer)
            except errors.RouterError:
                if best is None:
                    raise
                run.notes.append(f"escalation to {route} failed, kept the {run.route} answer")
                return best
            run.route, run.lane = route, got.lane.name
            best = got
            hit = check_answer(run.config, run.body, got.answer, run.signals, got.ms)
            if hit is None and self.self_checker.applies(run, route, got):
                hit = await self.self_checker.ask(run, route, got)
            step = self._escalate(run, route, hit) if hit is not None else None
            if step is None:
                return got
            route, screen = step
            lanes, skipped = screen.lanes, screen.skipped
            run.note_skipped(route, skipped)

    def _escalate(
        self, run: Run, route: str, hit: tuple[str, str]
    ) -> tuple[str, LaneScreen] | None:
        """The route to escalate to after an answer that set off `hit` (trigger, detail), with its
        lanes screened for this request (the cost budget counting what it has spent so far), or
        None to serve the answer."""
        trigger, detail = hit
        target = escalation_target(run.config, route)
        limit = run.config.escalation.max_escalations
        blocked = None
        if run.decision.forced_kind == "lane":
            blocked = "the request named a lane"
        elif run.config.mode == "observe":
            blocked = "observe mode"
        elif target is None:
            blocked = f"route {route} has no escalation target"
        elif run.escalations >= limit:
            blocked = f"maxEscalations {limit} reached"
        else:
            screen = screen_lanes(run.config, run.config.routes[target].lanes, run.signals,
                                  self.lane_unavailable, spent=run.record.cost_usd)
            if screen.budget_rejected:
                blocked = f"route {target}: " + "; ".join(f"{n} {why}" for n, why in screen.skipped)
        if blocked is not None or target is None:
            run.record.would_escalate = f"{trigger}: {detail} (not escalated: {blocked})"
            return None
        run.escalations += 1
        run.record.escalations.append(EscalationStep(route, target, trigger, detail))
        run.notes.append(f"escalated {route}->{target} ({trigger})")
        self.metrics.escalations.labels(route, target, trigger).inc()
        return target, screen

    async def _call_answer(self, run: Run, lane: Lane, limit_s: float) -> LaneAnswer:
        adapter = adapter_for(lane.provider.type)
        key = self._api_key(lane)
        req = adapter.build_request(lane, run.body, key, stream=False)
        started = time.monotonic()
        try:
            resp = await self._post(lane, req, limit_s)
            raw = resp.read_now()
            if raw is None:
                raw = await resp.read()
        except (UpstreamError, TimeoutError) as exc:
            raise LaneFailed(errors.classify_exception(exc, secret=key)) from exc
        status = resp.status
        ms = (time.monotonic() - started) * 1000
        data = _json_or_none(raw)
        if status >= 300:
            retry_after = resp.headers.get("retry-after")
            raise LaneFailed(errors.classify_status(status, data, retry_after, secret=key))
        try:
            answer, usage = adapter.parse_answer(data)
        except ValueError as exc:
            raise LaneFailed(errors.malformed_response(str(exc), secret=key)) from exc
        got = LaneAnswer(lane, answer, usage, ms, raw if adapter.type == "openai" else None)
        triggers = run.config.fallback.triggers
        if errors.REFUSAL in triggers and self._refusal_falls_back(run, answer):
            raise LaneFailed(errors.refused("the lane refused low-risk work"), got)
        if errors.TOOL_CALL_INVALID in triggers and run.signals.has_tools:
            problem = tool_call_problem(run.body, answer)
            if problem is not None:
                raise LaneFailed(errors.invalid_tool_call(problem), got)
        return got

    def _refusal_falls_back(self, run: Run, answer: Mapping[str, Any]) -> bool:
        """Whether a refusal in this answer moves the request on, `refusal` being a fallback
        trigger."""
        risk = run.signals.risk  # hints arrive lower-cased
        low = run.config.escalation.low_risk_levels
        if risk is not None and risk not in low and risk not in {r.lower() for r in low}:
            return False
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        refusal = message.get("refusal") if isinstance(message, Mapping) else None
        return bool(refusal) or (isinstance(content, str) and is_refusal(content))

    # -- streaming ------------------------------------------------------------------------------

    async def stream(self, run: Run, sink: StreamSink) -> None:
        """Serve a streaming request: fall back until a lane sends its first chunk, then pass
        chunks through as they arrive. A failure after that ends the stream with an error event
        (raised as `errors.RouterError` only when nothing was sent yet)."""
        self.budget.record_request()
        route = run.decision.route
        run.note_skipped(route, run.decision.skipped)

        opened = await self._try_lanes(
            run, route, run.decision.lanes, run.decision.skipped, self._open_stream
        )
        run.route, run.lane = route, opened.lane.name
        clean = False
        try:
            clean = await self._pump(run, opened, sink)
        finally:
            elapsed = time.monotonic() - opened.sent_at
            run.upstream_s += elapsed
            self.metrics.observe(
                self.metrics.upstream_duration,
                (opened.lane.name, "ok" if clean else "broken"),
                elapsed,
            )
            opened.close(clean)
            tr = opened.translator
            # The characters only matter (as an estimate) when the provider sent no count.
            chars = tr.output_chars if tr.usage.output_tokens is None else 0
            run.account(opened.lane, route, tr.usage, chars, self.metrics)

    async def _pump(self, run: Run, opened: OpenStream, sink: StreamSink) -> bool:
        """Copy the stream to the client, the frames of each upstream read in one write; True
        if it ended cleanly."""
        tr = opened.translator
        frames: bytes | None = opened.first
        failure = opened.failure
        while True:
            # Upstream failures end the stream with an error event, after the frames before
            # them; a failed write to the client (it went away) propagates and cancels the
            # upstream call.
            if frames:
                await sink.write(frames, last=tr.done)
            if tr.done:
                return True
            if failure is not None:
                problem = errors.mid_stream_problem(failure, self._api_key(opened.lane))
                break
            try:
                frames = await opened.next_frames()
            except StreamError as exc:
                frames, failure = exc.frames, exc
                continue
            except (UpstreamError, TimeoutError) as exc:
                problem = f"the provider connection broke mid-stream ({type(exc).__name__})"
                break
            if frames is None:
                problem = "the provider ended the stream early"
                break
        run.record.error = problem
        await sink.write(
            b"data: "
            + errors.error_body(
                f"Lane {opened.lane.name!r}: {problem}; the answer is incomplete.",
                type="server_error",
                code="stream_interrupted",
            )
            + b"\n\n"
        )
        raise StreamBroken(problem)

    async def _open_stream(self, run: Run, lane: Lane, limit_s: float) -> OpenStream:
        """Open the stream; the first chunk must come within the lane's firstToken timeout
        (or `limit_s` when the request's budget leaves less), the rest within its total."""
        adapter = adapter_for(lane.provider.type)
        key = self._api_key(lane)
        req = adapter.build_request(lane, run.body, key, stream=True)
        sent_at = time.monotonic()
        first_s = min(lane.first_token_ms / 1000, limit_s)
        try:
            resp = await self._post(lane, req, lane.total_ms / 1000, first_s)
            try:
                opened = await self._first_frames(run, lane, adapter, resp, sent_at, key)
            except BaseException:
                resp.close()
                raise
        except (UpstreamError, TimeoutError) as exc:
            raise LaneFailed(errors.classify_exception(exc, secret=key)) from exc
        resp.lift_early_deadline()
        return opened

    async def _first_frames(
        self,
        run: Run,
        lane: Lane,
        adapter: ProviderAdapter,
        resp: Response,
        sent_at: float,
        key: str | None,
    ) -> OpenStream:
        """Read until a read gives frames for the client; `_pump` sends them (and then the
        provider's error, if one followed them in that read)."""
        if resp.status >= 300:
            data = _json_or_none(await resp.read())
            retry_after = resp.headers.get("retry-after")
            raise LaneFailed(errors.classify_status(resp.status, data, retry_after, secret=key))
        translator = adapter.stream_translator(include_usage=wants_usage(run.body))
        opened = OpenStream(lane, resp, translator, sent_at)
        try:
            while (frames := await opened.next_frames()) is not None:
                if frames:
                    opened.first = frames
                    return opened
        except StreamError as exc:
            if exc.frames:  # the error came after the first frame: the client sees it
                opened.first, opened.failure = exc.frames, exc
                return opened
            body = exc.body if isinstance(exc.body, Mapping) else None
            status = 500
            failure = errors.classify_status(status, body, secret=key) if body else None
            raise LaneFailed(failure or errors.malformed_response(str(exc), secret=key)) from exc
        raise LaneFailed(errors.malformed_response("the stream ended before its first chunk"))

    # -- lanes, retries, fallback ---------------------------------------------------------------

    async def _try_lanes(
        self,
        run: Run,
        route: str,
        lanes: tuple[str, ...],
        skipped: tuple[tuple[str, str], ...],
        call: Call[T],
    ) -> T:
        """The first lane's result that succeeds, in order; raises RouterError otherwise.

        A lane ahead of the one called that was skipped for its health (or failed) makes the
        call a fallback from it. With a latency budget, each lane but the last gets at most the
        time left in it, so a stuck lane gives way to the next one within the budget."""
        if not lanes:
            raise no_lane(run, route)
        triggers = run.config.fallback.triggers
        previous = health_skipped_ahead(run.config, route, lanes[0], skipped) if skipped else None
        refused: T | None = None
        min_context = 0
        last = len(lanes) - 1
        for i, name in enumerate(lanes):
            lane = run.config.lanes[name]
            capped = run.budgeted and i < last
            skip = "contextTooSmall" if lane.context_window <= min_context else None
            if skip is None and capped and run.deadline <= time.monotonic():
                skip = DEADLINE_PASSED
            skip = skip or self.guards.acquire(name)
            if skip is not None:
                run.attempt(LaneAttempt(lane=name, route=route, outcome=skip))
                if previous is None and skip in HEALTH_SKIPS:
                    previous = (name, skip)
                continue
            if previous is not None:
                run.fell_back(previous, name, self.metrics)
            result, failure = await self._call_with_retries(run, route, lane, call, capped)
            if isinstance(result, LaneAnswer):
                # The characters only matter (as an estimate) when the provider sent no count.
                usage = result.usage
                chars = answer_chars(result.answer) if usage.output_tokens is None else 0
                run.account(lane, route, usage, chars, self.metrics)
            if failure is None:
                return result  # type: ignore[return-value]
            if refused is None:
                refused = result  # a refusal or bad tool call: served if no lane does better
            if failure.trigger is None:
                raise errors.upstream_rejected(name, failure)
            if failure.trigger not in triggers:
                break
            if failure.trigger == errors.CONTEXT_OVERFLOW:
                min_context = max(min_context, lane.context_window)
            previous = (name, failure.trigger)
        if refused is not None:
            return refused
        raise errors.all_lanes_failed(route, outcomes(run, route))

    async def _call_with_retries(
        self, run: Run, route: str, lane: Lane, call: Call[T], capped: bool
    ) -> tuple[T | None, errors.UpstreamFailure | None]:
        """(result, None) on success, else (the refused answer or None, the failure). `capped`:
        each call ends by the request's deadline (a later lane can still serve)."""
        retries = 0
        total_s = lane.total_ms / 1000
        while True:
            started = time.monotonic()
            limit_s = min(total_s, max(run.deadline - started, 0.001)) if capped else total_s
            try:
                result = await call(run, lane, limit_s)
            except LaneFailed as exc:
                failure, refused = exc.failure, exc.result
            except asyncio.CancelledError:
                self.guards.release(lane.name)
                raise
            else:
                if self.guards.record_success(lane.name):
                    log.info("Lane %s: probe succeeded, circuit closed", lane.name)
                elapsed = time.monotonic() - started
                if not isinstance(result, OpenStream):
                    run.upstream_s += elapsed
                    self.metrics.observe(self.metrics.upstream_duration, (lane.name, "ok"), elapsed)
                run.attempt(lane_attempt(lane, route, "ok", elapsed, 200, retries))
                return result, None

            elapsed = time.monotonic() - started
            run.upstream_s += elapsed
            self.metrics.observe(
                self.metrics.upstream_duration, (lane.name, failure.outcome), elapsed
            )
            run.attempt(
                lane_attempt(
                    lane, route, failure.outcome, elapsed, failure.status, retries, failure.message
                )
            )
            self._note_failure(run.config, lane, failure)
            delay = self._retry_delay(run, lane, failure, retries)
            if delay is None:
                return refused, failure
            retries += 1
            self.metrics.retries.labels(lane.name).inc()
            await asyncio.sleep(delay)
            run.waited_s += delay
            if self.guards.acquire(lane.name) is not None:
                return None, failure  # the circuit opened meanwhile

    def _retry_delay(
        self, run: Run, lane: Lane, failure: errors.UpstreamFailure, retries: int
    ) -> float | None:
        """Seconds to wait before retrying on the same lane, or None to move on."""
        fb = run.config.fallback
        if failure.trigger not in RETRYABLE or failure.trigger not in fb.triggers:
            return None
        if retries >= fb.retries_max:
            return None
        delay = fb.backoff_ms / 1000 * (2**retries) * self._rng.uniform(0.5, 1.5)
        if run.deadline - time.monotonic() <= delay:
            return None  # no time left in the request's deadline for another try
        if not self.budget.try_retry():
            self.metrics.retries_denied.labels(lane.name).inc()
            return None
        return delay

    def _note_failure(
        self, config: RouterConfig, lane: Lane, failure: errors.UpstreamFailure
    ) -> None:
        """Feed a failed call into the lane's circuit breaker or cool-down."""
        trigger = failure.trigger
        if trigger == errors.RATE_LIMITED:
            self.guards.release(lane.name)
            self.guards.cool_down(lane.name, failure.retry_after_s or DEFAULT_COOL_DOWN_S)
        elif trigger in (errors.TIMEOUT, errors.SERVER_ERROR, errors.CONNECTION_ERROR):
            fb = config.fallback
            opened = self.guards.record_failure(
                lane.name, fb.breaker_failures, fb.breaker_cooldown_ms / 1000
            )
            if opened:
                log.warning(
                    "Lane %s: circuit opened after %s; skipping it for %.1fs",
                    lane.name,
                    trigger,
                    fb.breaker_cooldown_ms / 1000,
                )
        elif failure.status in (401, 403):
            self.guards.release(lane.name)
        else:
            self.guards.record_success(lane.name)  # the provider answered: it is up


class StreamBroken(Exception):
    """A stream failed after its first chunk; the client got an SSE error event."""


def _json_or_none(raw: bytes) -> Any:
    try:
        return fastjson.loads(raw)
    except ValueError:
        return None
