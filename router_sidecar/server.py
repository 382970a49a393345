"""The sidecar's HTTP surface: routes, request parsing, response headers, metrics, log.

`build_app(store)` returns the application (`SidecarApp`); `laneway serve` (`laneway.cmd_serve`)
runs it, tests and `laneway demo` run it in-process. `http_server.HttpServer` carries its
requests and answers (a thin HTTP/1.1 layer on httptools, chosen for speed; see that module).
Handlers stay thin: they parse and check the body once, ask `decision.decide` for a decision,
hand it to `engine.Engine`, and turn the result or the `errors.RouterError` into a response.
Every `/v1/*` response carries the `x-laneway-*` headers; every chat completion ends with one
decision-log line and its metrics, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router_sidecar import errors, fastjson
from router_sidecar import metrics as m
from router_sidecar.config import RouterConfig
from router_sidecar.decision import (
    AUTO,
    Decision,
    UnknownModel,
    decide,
    estimate_cost,
    header_safe,
)
from router_sidecar.decision_log import DecisionRecord, emit, emit_feedback
from router_sidecar.engine import Engine, Run, StreamBroken
from router_sidecar.explain import explain
from router_sidecar.http_server import HttpServer, Request, Response, Stream
from router_sidecar.reload import ConfigStore
from router_sidecar.signals import HintError, Signals, extract_signals, parse_hints

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
NONE = "-"  # header value when no route or lane was chosen
FEEDBACK_OUTCOMES = ("accepted", "corrected")
# Decisions remembered for /v1/feedback: about 11 MB when full (112 bytes each).
REMEMBERED_DECISIONS = 100_000
_JSON = "application/json"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class RecentDecisions:
    """The last `limit` decision ids this sidecar handed out, each with (policy, route): the
    ids `/v1/feedback` accepts. Oldest forgotten first.

    A dict and a queue of its keys in arrival order, with one shared (policy, route) pair per
    route, take half the memory of an OrderedDict of fresh pairs: the sidecar keeps this many
    for as long as it runs, so that is most of its memory growth after start-up."""

    def __init__(self, limit: int = REMEMBERED_DECISIONS) -> None:
        self.limit = limit
        self._ids: dict[str, tuple[str, str]] = {}
        self._order: deque[str] = deque()
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def add(self, decision_id: str, policy: str, route: str) -> None:
        pair = (policy, route)
        ids = self._ids
        ids[decision_id] = self._pairs.setdefault(pair, pair)
        order = self._order
        order.append(decision_id)
        if len(order) > self.limit:
            ids.pop(order.popleft(), None)

    def get(self, decision_id: str) -> tuple[str, str] | None:
        return self._ids.get(decision_id)


@dataclass
class State:
    store: ConfigStore
    engine: Engine
    metrics: m.Metrics
    max_body_bytes: int
    allow_remote_api: bool = False
    decisions: RecentDecisions = field(default_factory=RecentDecisions)


def is_loopback(remote: str | None) -> bool:
    """The transport peer is this host (127.0.0.0/8, ::1, or IPv4-mapped 127.x)."""
    if not remote:
        return False
    return remote.startswith(("127.", "::ffff:127.")) or remote == "::1"


# ---------------------------------------------------------------------------------------------
# Parsing the request.


def _read_json(request: Request, limit: int) -> Any:
    """The parsed body; 413 over `limit` (the server did not read it), 400 when it is not JSON."""
    if request.too_large:
        raise errors.body_too_large(limit)
    try:
        return fastjson.loads(request.body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise errors.invalid_json(str(exc)) from exc


def _check_chat_body(body: Any) -> tuple[str, bool]:
    """(model, stream) of a chat completion body, or a 400 that says what is wrong."""
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    model = body.get("model", AUTO)
    if not isinstance(model, str) or not model:
        raise errors.bad_request(
            "'model' must be a non-empty string: 'auto', a route or a lane.", param="model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request("'messages' must be a non-empty list.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise errors.bad_request(
                f"'messages[{i}]' must be an object with a string 'role'.", param=f"messages[{i}]"
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("'stream' must be true or false.", param="stream")
    for key, kind, word in (("tools", list, "a list"), ("stream_options", dict, "an object")):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise errors.bad_request(f"'{key}' must be {word}.", param=key)
    return model, bool(stream)


def _decide(
    state: State, config: RouterConfig, body: Mapping[str, Any], request: Request, model: str
) -> tuple[Signals, Decision]:
    try:
        hints = parse_hints(request.headers)
    except HintError as exc:
        raise errors.bad_hint(str(exc)) from exc
    signals = extract_signals(body, hints)
    try:
        decision = decide(config, signals, model, state.engine.lane_unavailable)
    except UnknownModel as exc:
        raise errors.model_not_found(model, config.routes, sorted(config.lanes)) from exc
    return signals, decision


class _DecisionIds:
    """24 hex characters of OS randomness per id, read from the OS 4 KiB at a time rather than
    with a system call per request."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._hex):
            self._hex, self._at = os.urandom(4080).hex(), 0
        start, self._at = self._at, self._at + 24
        return self._hex[start : self._at]


_new_id = _DecisionIds().next


# ---------------------------------------------------------------------------------------------
# Responses.


def _headers(rec: DecisionRecord, run: Run | None, reason: str) -> dict[str, str]:
    return {
        "x-laneway-decision-id": rec.decision_id,
        "x-laneway-route": (run.route or run.decision.route) if run else rec.route or NONE,
        "x-laneway-lane": (run.lane or NONE) if run else NONE,
        "x-laneway-reason": reason,
        "x-laneway-escalations": str(run.escalations if run else 0),
        "x-laneway-fallbacks": str(run.fallbacks if run else 0),
    }


def _reason(run: Run | None, error: errors.RouterError | None = None) -> str:
    parts = [run.decision.reason] if run else []
    if run and run.notes:
        parts.extend(run.notes)
    if error is not None:
        parts.append(f"error {error.code or error.status}")
    return header_safe("; ".join(parts)) or NONE


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    out = {"Content-Type": _JSON}
    if headers:
        out.update(headers)
    return Response(status, json.dumps(data).encode(), out)


def _error_response(exc: errors.RouterError, rec: DecisionRecord, run: Run | None) -> Response:
    return _json(exc.body(), exc.status, _headers(rec, run, _reason(run, exc)))


def error_answer(status: int, message: str) -> Response:
    """The answer to a request the HTTP layer rejects before any handler sees it."""
    codes = {400: "malformed_request", 413: "request_too_large", 431: "request_header_too_large"}
    code = codes.get(status, "http_error")
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    err = errors.RouterError(status, message, type=error_type, code=code)
    return _error_response(err, DecisionRecord(decision_id=_new_id()), None)


class _Sink:
    """The client's stream: opened on the first write, so earlier failures can fall back."""

    def __init__(self, request: Request, rec: DecisionRecord, run: Run) -> None:
        self.request, self.rec, self.run = request, rec, run
        self.response: Stream | None = None

    async def write(self, data: bytes, *, last: bool = False) -> None:
        """Send frames; `last` also ends the response (in the same send)."""
        if self.response is None:
            headers = {**_SSE_HEADERS, **_headers(self.rec, self.run, _reason(self.run))}
            self.response = self.request.open_stream(200, headers)
        await self.response.write(data, last=last)


# ---------------------------------------------------------------------------------------------
# Chat completions.


async def chat_completions(state: State, request: Request) -> Response | Stream:
    started = time.monotonic()
    rec = DecisionRecord(decision_id=_new_id())
    run: Run | None = None
    try:
        config = state.store.current
        if config is None:
            raise errors.no_config()
        rec.policy, rec.mode, rec.config_version = config.policy_name, config.mode, config.version
        body = _read_json(request, state.max_body_bytes)
        model, stream = _check_chat_body(body)
        rec.requested_model, rec.stream = model, stream
        signals, decision = _decide(state, config, body, request, model)
        run = _start_run(state, config, body, signals, decision, rec, started)
        if stream:
            return await _serve_stream(request, state, rec, run)
        got = await state.engine.complete(run)
        rec.outcome = m.OK
        payload = got.raw if got.raw is not None and not run.escalations else None
        headers = _headers(rec, run, _reason(run))
        headers["Content-Type"] = _JSON
        return Response(200, payload or json.dumps(got.answer).encode(), headers)
    except errors.RouterError as exc:
        rec.outcome, rec.status, rec.error = exc.outcome, exc.status, exc.message
        return _error_response(exc, rec, run)
    except asyncio.CancelledError:
        rec.outcome, rec.status = m.CANCELLED, 499
        raise
    except Exception:
        rec.outcome, rec.status = m.ERROR, 500
        raise
    finally:
        _finish(state, rec, run, started)


def _start_run(
    state: State,
    config: RouterConfig,
    body: Mapping[str, Any],
    signals: Signals,
    decision: Decision,
    rec: DecisionRecord,
    started: float,
) -> Run:
    rec.rule, rec.score, rec.route, rec.reason = (
        decision.rule,
        decision.score,
        decision.route,
        decision.reason,
    )
    rec.enforce_route, rec.enforce_rule = decision.enforce_route, decision.enforce_rule
    rec.enforce_score = decision.enforce_score
    rec.tier, rec.task, rec.risk = signals.tier, signals.task, signals.risk
    mt = state.metrics
    mt.count(
        mt.decisions,
        (config.policy_name, _rule_label(decision), decision.enforce_route, config.mode),
    )
    if config.mode == "observe":
        _enforce_cost(mt, config, signals, decision, rec)
    first = config.lanes[decision.lanes[0]] if decision.lanes else None
    budget_ms = signals.latency_budget_ms or config.latency_budget_ms
    budgeted = bool(budget_ms)
    budget_ms = budget_ms or (first.total_ms if first else 60_000)
    return Run(
        config=config,
        body=body,
        signals=signals,
        decision=decision,
        record=rec,
        started=started,
        deadline=started + budget_ms / 1000,
        budgeted=budgeted,
    )


def _enforce_cost(
    mt: m.Metrics, config: RouterConfig, signals: Signals, decision: Decision, rec: DecisionRecord
) -> None:
    """Observe mode: what serving with enforce's route's first lane would have cost (the
    estimate budget checks use), in the log and laneway_observe_enforce_cost_usd_total."""
    route = config.routes.get(decision.enforce_route)
    if route is None or not route.lanes:
        return
    cost = estimate_cost(config.lanes[route.lanes[0]], signals)
    rec.enforce_lane, rec.enforce_cost_usd = route.lanes[0], cost
    mt.count(mt.observe_enforce_cost, (config.policy_name, decision.enforce_route), cost)


def _rule_label(decision: Decision) -> str:
    """`rule` label of laneway_decisions_total: the rule enforce mode chose by, bounded."""
    if decision.forced:
        return "(model)"
    if decision.enforce_rule is not None:
        return decision.enforce_rule
    return "(complexity)"


async def _serve_stream(
    request: Request, state: State, rec: DecisionRecord, run: Run
) -> Response | Stream:
    sink = _Sink(request, rec, run)
    try:
        try:
            await state.engine.stream(run, sink)
            rec.outcome = m.OK
        except StreamBroken:
            rec.outcome = m.FAILED
        if sink.response is not None and not sink.response.ended:
            await sink.response.end()
    except ConnectionResetError:  # the client went away, perhaps just before the stream's end
        rec.outcome, rec.status = m.CANCELLED, 499
    if sink.response is None:  # the client left before the first byte
        return Response(499)
    return sink.response


def _finish(state: State, rec: DecisionRecord, run: Run | None, started: float) -> None:
    """Metrics and the decision-log line for one chat completion, whatever happened."""
    total = time.monotonic() - started
    rec.latency_ms = total * 1000
    mt = state.metrics
    if run is not None:
        rec.route, rec.lane = run.route or run.decision.route, run.lane
        rec.upstream_ms = run.upstream_s * 1000
        rec.reason = _reason(run)
        mt.observe(mt.router_overhead, (), max(0.0, total - run.upstream_s - run.waited_s))
        state.decisions.add(rec.decision_id, rec.policy, rec.route)
    policy = rec.policy
    mt.count(mt.requests, (policy, rec.route, rec.lane, rec.outcome or m.ERROR))
    mt.observe(mt.request_duration, (policy, rec.route), total)
    emit(rec)


# ---------------------------------------------------------------------------------------------
# The other endpoints.


async def route_explain(state: State, request: Request) -> Response:
    rec = DecisionRecord(decision_id=_new_id())
    try:
        config = state.store.current
        if config is None:
            raise errors.no_config()
        body = _read_json(request, state.max_body_bytes)
        model, _ = _check_chat_body(body)
        _, decision = _decide(state, config, body, request, model)
    except errors.RouterError as exc:
        return _error_response(exc, rec, None)
    headers = _headers(rec, None, header_safe(decision.reason) or NONE)
    headers["x-laneway-route"] = decision.route
    headers["x-laneway-lane"] = decision.lanes[0] if decision.lanes else NONE
    return _json(explain(config, decision), headers=headers)


async def feedback(state: State, request: Request) -> Response:
    rec = DecisionRecord(decision_id=_new_id())
    try:
        body = _read_json(request, state.max_body_bytes)
        decision_id, outcome = _check_feedback(body)
        known = state.decisions.get(decision_id)
        if known is None:
            raise errors.unknown_decision(decision_id)
    except errors.RouterError as exc:
        return _error_response(exc, rec, None)
    state.metrics.feedback.labels(outcome, known[1]).inc()
    emit_feedback(decision_id, outcome)
    return _json(
        {"decision_id": decision_id, "outcome": outcome, "recorded": True},
        headers=_headers(rec, None, "feedback recorded"),
    )


def _check_feedback(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    decision_id = body.get("decision_id")
    if not isinstance(decision_id, str) or not 0 < len(decision_id) <= 128:
        raise errors.bad_request(
            "'decision_id' must be the x-laneway-decision-id of an earlier response.",
            param="decision_id",
        )
    if not decision_id.isprintable():
        raise errors.bad_request("'decision_id' must be printable text.", param="decision_id")
    outcome = body.get("outcome")
    if outcome not in FEEDBACK_OUTCOMES:
        raise errors.bad_request("'outcome' must be 'accepted' or 'corrected'.", param="outcome")
    return decision_id, outcome


async def list_models(state: State, request: Request) -> Response:
    rec = DecisionRecord(decision_id=_new_id())
    config = state.store.current
    if config is None:
        return _error_response(errors.no_config(), rec, None)
    data = [_model_entry(AUTO, "auto", None)]
    data.extend(_model_entry(r.name, "route", list(r.lanes)) for r in config.routes.values())
    data.extend(_model_entry(name, "lane", None) for name in sorted(config.lanes))
    return _json({"object": "list", "data": data}, headers=_headers(rec, None, "model list"))


def _model_entry(name: str, kind: str, lanes: list[str] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": name, "object": "model", "created": 0, "owned_by": "laneway"}
    entry["laneway"] = {"kind": kind} if lanes is None else {"kind": kind, "lanes": lanes}
    return entry


async def healthz(state: State, request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(state: State, request: Request) -> Response:
    store = state.store
    config = store.current
    if config is None:
        return _json({"status": "not ready", "reason": "no config loaded"}, status=503)
    return _json(
        {
            "status": "ready",
            "configVersion": config.version,
            "policy": f"{config.policy_namespace}/{config.policy_name}",
            "mode": config.mode,
            "stale": store.stale,
        }
    )


async def metrics_endpoint(state: State, request: Request) -> Response:
    return Response(200, state.metrics.render(), {"Content-Type": m.CONTENT_TYPE})


Endpoint = Callable[[State, Request], Awaitable[Response | Stream]]
ROUTES: dict[str, dict[str, Endpoint]] = {
    "/v1/chat/completions": {"POST": chat_completions},
    "/v1/models": {"GET": list_models},
    "/v1/route/explain": {"POST": route_explain},
    "/v1/feedback": {"POST": feedback},
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": metrics_endpoint},
}


# ---------------------------------------------------------------------------------------------
# The application.


class SidecarApp:
    """The sidecar serving `store.current`: routes requests to the endpoints above. `/v1/*`
    answers only loopback callers unless `allow_remote_api`; probes and /metrics answer anyone.
    Unknown paths, wrong methods and router bugs also answer in the OpenAI error shape."""

    def __init__(
        self,
        store: ConfigStore,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        allow_remote_api: bool = False,
    ) -> None:
        metrics = m.Metrics()
        engine = Engine(metrics, secrets=store.secrets)
        self.state = State(
            store=store,
            engine=engine,
            metrics=metrics,
            max_body_bytes=max_body_bytes,
            allow_remote_api=allow_remote_api,
        )
        self.server = HttpServer(self.handle, error_answer, max_body_bytes=max_body_bytes)
        self.addresses: list[tuple[str, int]] = []

        def rejected(source: str, error: str) -> None:
            metrics.config_reload_failures.inc()
            metrics.config_stale.set(1 if store.stale else 0)

        def applied(config: RouterConfig) -> None:
            engine.config_applied(config)
            metrics.config_stale.set(0)

        store.subscribe(applied=applied, rejected=rejected)

    async def handle(self, request: Request) -> Response | Stream:
        state = self.state
        path = request.path
        methods = ROUTES.get(path)
        if methods is None:
            return _error_response(errors.not_found(path), _no_record(), None)
        method = "GET" if request.method == "HEAD" else request.method
        endpoint = methods.get(method)
        if endpoint is None:
            answer = _error_response(
                errors.method_not_allowed(request.method, path), _no_record(), None
            )
            answer.headers["Allow"] = ", ".join(methods)
            return answer
        if (
            path.startswith("/v1/")
            and not state.allow_remote_api
            and not is_loopback(request.remote)
        ):
            err = errors.remote_api_forbidden(request.remote)
            return _error_response(err, _no_record(), None)
        return await endpoint(state, request)

    async def serve(self, host: str, port: int) -> list[tuple[str, int]]:
        """Listen on host:port (0: a free port); the addresses listened on."""
        self.addresses = await self.server.serve(host, port)
        return self.addresses

    async def close(self, grace_s: float = 10.0) -> None:
        """Finish requests in flight (up to `grace_s`), then close the upstream pools."""
        await self.server.close(grace_s)
        await self.state.engine.close()


def _no_record() -> DecisionRecord:
    return DecisionRecord(decision_id=_new_id())


def build_app(
    store: ConfigStore,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allow_remote_api: bool = False,
) -> SidecarApp:
    """The sidecar application serving `store.current` (see `SidecarApp`)."""
    return SidecarApp(store, max_body_bytes=max_body_bytes, allow_remote_api=allow_remote_api)
