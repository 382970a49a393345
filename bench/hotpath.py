"""Microseconds per call of each socket-free stage of one chat completion in the sidecar.

Run as `.venv/bin/python bench/hotpath.py [--repeat 9] [--min-time 0.2] [--only STAGE ...]`.
`--profile STAGE` runs one stage under cProfile instead and prints where its time goes; `--gc`
keeps the garbage collector on while timing (it is off by default, as in `timeit`). The event
loop is uvloop's, as in `laneway serve`; `--asyncio` uses asyncio's own.

The config is the one `make bench` gives the sidecar (`servers.laneway_config`, one route and one
lane per request kind, validated by `router_sidecar.config.parse_config`) and the body is
`payloads.request_body`, so the stages are exactly what a `wrk` run costs per request:

- `json body`: `fastjson.loads` of the request bytes.
- `parse_hints`: the hint headers of a wrk request (there are none).
- `extract_signals`, `decide`: the routing decision for `model: bench-plain` (a route).
- `check_answer`: the escalation checks on the static upstream's answer.
- `metrics`: every `Metrics.count` and `Metrics.observe` one successful request makes.
- `record + Run`: the server's own `_start_run` and `_finish` for a successful request: the
  `DecisionRecord` and `Run`, the decision's count, the remembered decision id, the request's
  metrics, and `emit` writing the decision line as `laneway serve` does (to /dev/null here).
- `upstream client`: `Upstreams.post` and `Response.read` over a connection whose transport
  answers at once with the static upstream's bytes (request bytes out, response parsed). The
  request leaves at the end of the loop's turn (`router_sidecar/outbox.py`), so this and the
  stages that contain it include one more turn of the loop than a busy sidecar pays for.
- `engine.complete`: `Engine.complete` for one request over that connection: lane guards, the
  provider request and answer, the checks, retries' bookkeeping, tokens and cost.
- `request, end to end`: `server.chat_completions` itself, given the request as the HTTP layer
  hands it over: all of the above, the body checks and the answer's headers; only the HTTP
  server is left out. This is the figure to compare with the server's own cost.

The streaming request (`model: bench-stream`, `"stream": true`) has three more, against the
static upstream's 2 KB SSE answer of 12 events, which arrives in one read as it does from nginx:

- `stream translator`: the OpenAI stream translator reading that answer (`OpenAIStream.read`).
- `engine.stream`: `Engine.stream` for one request, its frames written to a sink that drops them.
- `stream request, end to end`: `server.chat_completions` for the streaming request, the client
  connection a stand-in that takes the chunked answer's bytes (it must get them all).

Two more cases route `model: auto` through the support-bot policy of `examples/` (compiled by
`laneway_operator`): one prompt a triage rule matches, one that falls through to the complexity
score. Each figure is the median over `--repeat` runs of at least `--min-time` seconds each; a
whole run takes about half a minute. The machine is shared and noisy: compare medians of several
runs, taken in turns with the version you compare against.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a folder of the repo, not an installed package

from bench import payloads, servers  # noqa: E402
from router_sidecar import fastjson  # noqa: E402
from router_sidecar import metrics as m  # noqa: E402
from router_sidecar.checks import check_answer  # noqa: E402
from router_sidecar.config import RouterConfig, parse_config  # noqa: E402
from router_sidecar.decision import Decision, decide  # noqa: E402
from router_sidecar.decision_log import (  # noqa: E402
    DecisionLines,
    DecisionRecord,
    write_lines_to,
)
from router_sidecar.egress_proxy import EGRESS_VARIABLES  # noqa: E402
from router_sidecar.engine import Engine, Run  # noqa: E402
from router_sidecar.http1 import Connection  # noqa: E402
from router_sidecar.http_server import Request, Response, Stream  # noqa: E402
from router_sidecar.providers import adapter_for  # noqa: E402
from router_sidecar.reload import ConfigStore  # noqa: E402
from router_sidecar.secrets import SecretStore  # noqa: E402
from router_sidecar.server import (  # noqa: E402
    State,
    _finish,
    _start_run,
    build_app,
    chat_completions,
)
from router_sidecar.signals import Signals, extract_signals, parse_hints  # noqa: E402

Stage = Callable[[], Any]
AsyncStage = Callable[[], Awaitable[Any]]

UPSTREAM_PORT = 9  # never connected to: the transport below answers in place of a socket
EXAMPLES = REPO / "examples"
# The headers of one of wrk's requests (see bench/loadgen.py's script), names lower-cased.
REQUEST_HEADERS = {
    "host": "127.0.0.1:8080",
    "content-type": "application/json",
    "content-length": str(len(payloads.request_body(stream=False))),
}
AUTO_RULE_TEXT = "Why do unit tests matter? Answer in one sentence."
AUTO_SCORE_TEXT = "Summarise the meeting notes below in three bullet points for the team."
_CALLS_PER_TURN = 100  # async calls between turns of the event loop


def _upstream_answer(*, stream: bool) -> bytes:
    """The static upstream's response to the request of that kind, head and body, as nginx."""
    if stream:
        body, kind = payloads.stream_answer().encode(), "text/event-stream"
    else:
        body, kind = payloads.plain_answer().encode(), "application/json"
    head = (
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


class _AnsweringTransport:
    """A transport that answers every request written to it at once, as the static upstream
    does: the streaming answer for its `/stream/` path, else the non-streaming one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.answers = {kind: _upstream_answer(stream=kind) for kind in (False, True)}

    def write(self, data: bytes) -> None:
        line = data[: data.find(b"\r\n")]
        self.conn.data_received(self.answers[b" /stream/" in line])

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass  # a connection aborted mid-run fails the next request (port 9 is closed)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The inputs.


def bench_config() -> RouterConfig:
    base = f"http://127.0.0.1:{UPSTREAM_PORT}"
    return parse_config(servers.laneway_config(f"{base}/plain/v1", f"{base}/stream/v1"))


def auto_config() -> RouterConfig | None:
    """The support-bot example policy compiled offline, or None when it does not compile."""
    try:
        from laneway_operator.manifests import compile_files
    except ImportError:
        return None
    return parse_config(compile_files([str(EXAMPLES)], "support-bot", "team-a"))


def auto_body(user_text: str) -> bytes:
    body = json.loads(payloads.request_body(stream=False))
    body["model"] = "auto"
    body["messages"][-1]["content"] = user_text
    return json.dumps(body, separators=(",", ":")).encode()


def install_upstream(engine: Engine, config: RouterConfig) -> None:
    """Give the engine's pool for the bench lanes (both on one host) one connection that
    answers in place."""
    for model in (payloads.PLAIN_MODEL, payloads.STREAM_MODEL):
        lane = config.lanes[f"{model}-lane"]
        assert lane.provider.base_url.startswith(f"http://127.0.0.1:{UPSTREAM_PORT}/")
    pool = engine.upstreams._pool(("http", "127.0.0.1", UPSTREAM_PORT))
    conn = Connection(pool)
    conn.connection_made(_AnsweringTransport(conn))  # type: ignore[arg-type]
    conn.idle_since = time.monotonic()
    pool.idle.append(conn)


class _Parser:
    def get_http_version(self) -> str:
        return "1.1"


class _ClientConnection:
    """The client's side of a streamed answer, as `http_server.Stream` uses it: an HTTP/1.1
    connection whose writes go nowhere but are counted."""

    def __init__(self) -> None:
        self.parser = _Parser()
        self.closing = False
        self.sent = 0

    async def send(self, data: bytes) -> None:
        self.sent += len(data)


class _Discard:
    """A stream sink for `Engine.stream` that drops the frames."""

    async def write(self, data: bytes, *, last: bool = False) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The request as the server runs it, without HTTP.


def new_run(
    state: State, body: Any, signals: Signals, decision: Decision, *, stream: bool = False
) -> Run:
    """The record and Run that `server.chat_completions` builds before the engine starts (by
    the server's own `_start_run`, which also counts the decision)."""
    config = state.store.current
    assert config is not None
    rec = DecisionRecord(decision_id="0" * 24)
    rec.policy, rec.mode, rec.config_version = config.policy_name, config.mode, config.version
    rec.requested_model, rec.stream = decision.requested_model, stream
    return _start_run(state, config, body, signals, decision, rec, time.monotonic())


def request_metrics(mt: m.Metrics, config: RouterConfig, decision: Decision) -> None:
    """Every count and observation of one successful request, server's and engine's."""
    policy, route, lane = config.policy_name, decision.route, decision.lanes[0]
    mt.count(mt.decisions, (policy, "(model)", decision.enforce_route, config.mode))
    mt.observe(mt.upstream_duration, (lane, "ok"), 0.0004)
    mt.count(mt.tokens, (lane, "input"), 31)
    mt.count(mt.tokens, (lane, "output"), 28)
    mt.count(mt.cost, (policy, route, lane), 0.00001)
    mt.observe(mt.router_overhead, (), 0.0002)
    mt.count(mt.requests, (policy, route, lane, m.OK))
    mt.observe(mt.request_duration, (policy, route), 0.0006)


# ---------------------------------------------------------------------------------------------
# The stages.


def build_stages(state: State) -> tuple[dict[str, Stage], dict[str, AsyncStage]]:
    engine, mt, config = state.engine, state.metrics, state.store.current
    assert config is not None
    install_upstream(engine, config)
    raw = payloads.request_body(stream=False)
    headers = REQUEST_HEADERS
    body = fastjson.loads(raw)
    hints = parse_hints(headers)
    signals = extract_signals(body, hints)
    model = body["model"]
    decision = decide(config, signals, model, engine.lane_unavailable)
    answer = json.loads(payloads.plain_answer())
    lane = config.lanes[decision.lanes[0]]
    upstream_url = lane.provider.base_url + "/chat/completions"
    request_bytes = fastjson.dumps(body)
    post_headers = {"Content-Type": "application/json"}

    def record_and_run() -> None:
        run = new_run(state, body, signals, decision)
        run.record.outcome, run.lane = m.OK, lane.name
        _finish(state, run.record, run, run.started)

    async def upstream_client() -> None:
        resp = await engine.upstreams.post(
            upstream_url, post_headers, request_bytes, connect_s=5.0, total_s=120.0
        )
        await resp.read()

    async def engine_complete() -> None:
        await engine.complete(new_run(state, body, signals, decision))

    async def whole_request() -> None:
        request = Request("POST", payloads.CHAT_PATH, "", headers, raw, "127.0.0.1", True)
        answer = await chat_completions(state, request)
        if not isinstance(answer, Response) or answer.status != 200:
            raise RuntimeError(f"the bench request failed: {getattr(answer, 'body', answer)!r}")

    raw_stream = payloads.request_body(stream=True)
    stream_body = fastjson.loads(raw_stream)
    stream_headers = {**headers, "content-length": str(len(raw_stream))}
    stream_signals = extract_signals(stream_body, hints)
    stream_decision = decide(config, stream_signals, stream_body["model"])
    sse = payloads.stream_answer().encode()
    adapter = adapter_for(config.lanes[stream_decision.lanes[0]].provider.type)
    expected = len(_served_stream(sse))

    def stream_translator() -> None:
        translator = adapter.stream_translator(include_usage=False)
        translator.read(sse)
        translator.close()

    async def engine_stream() -> None:
        run = new_run(state, stream_body, stream_signals, stream_decision, stream=True)
        await engine.stream(run, _Discard())

    async def whole_stream_request() -> None:
        client = _ClientConnection()
        args = ("POST", payloads.CHAT_PATH, "", stream_headers, raw_stream, "127.0.0.1", True)
        request = Request(*args, conn=client)  # type: ignore[arg-type]
        answer = await chat_completions(state, request)
        if not isinstance(answer, Stream) or client.sent < expected:
            raise RuntimeError(f"the bench stream failed: {getattr(answer, 'body', answer)!r}")

    sync: dict[str, Stage] = {
        "json body": lambda: fastjson.loads(raw),
        "parse_hints": lambda: parse_hints(headers),
        "extract_signals": lambda: extract_signals(body, hints),
        "decide": lambda: decide(config, signals, model, engine.lane_unavailable),
        "check_answer": lambda: check_answer(config, body, answer, signals, 0.4),
        "metrics": lambda: request_metrics(mt, config, decision),
        "record + Run": record_and_run,
        "stream translator": stream_translator,
    }
    sync.update(_auto_stages())
    timed_async: dict[str, AsyncStage] = {
        "upstream client": upstream_client,
        "engine.complete": engine_complete,
        "request, end to end": whole_request,
        "engine.stream": engine_stream,
        "stream request, end to end": whole_stream_request,
    }
    return sync, timed_async


def _served_stream(sse: bytes) -> bytes:
    """What the client gets of the static upstream's stream: its events less the usage chunk,
    which the router asked for and the bench request did not."""
    events = sse.split(b"\n\n")
    return b"\n\n".join(e for e in events if b'"usage"' not in e)


def _auto_stages() -> dict[str, Stage]:
    config = auto_config()
    if config is None:
        return {}
    stages: dict[str, Stage] = {}
    for name, text in (("auto: rule", AUTO_RULE_TEXT), ("auto: score", AUTO_SCORE_TEXT)):
        body = fastjson.loads(auto_body(text))
        hints = parse_hints({})

        def signals_and_decision(body: Any = body, hints: Any = hints) -> Decision:
            return decide(config, extract_signals(body, hints), "auto")

        stages[f"{name} (signals + decide)"] = signals_and_decision
    return stages


# ---------------------------------------------------------------------------------------------
# Timing.


def _loops_sync(fn: Stage, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - started


async def _loops_async(fn: AsyncStage, n: int) -> float:
    started = time.perf_counter()
    for done in range(0, n, _CALLS_PER_TURN):
        for _ in range(min(_CALLS_PER_TURN, n - done)):
            await fn()
        # A turn of the loop, as between requests: it drops the connection's cancelled timers.
        await asyncio.sleep(0)
    return time.perf_counter() - started


async def measure(fn: Stage | AsyncStage, is_async: bool, repeat: int, min_time: float) -> float:
    """Median microseconds per call over `repeat` runs of at least `min_time` seconds each."""

    async def run(n: int) -> float:
        if is_async:
            return await _loops_async(fn, n)  # type: ignore[arg-type]
        return _loops_sync(fn, n)  # type: ignore[arg-type]

    n = 1
    while (elapsed := await run(n)) < min_time / 5:
        n *= 4
    n = max(1, int(n * min_time / max(elapsed, 1e-9)))
    samples = [await run(n) / n * 1e6 for _ in range(repeat)]
    return statistics.median(samples)


async def run_all(args: argparse.Namespace) -> list[tuple[str, float]]:
    # A secrets folder without key files, as `make bench` gives the sidecar: no key is sent.
    store = ConfigStore(SecretStore(str(REPO / "bench")))
    store.apply(bench_config(), source="bench")
    app = build_app(store)
    sync, timed_async = build_stages(app.state)
    stages = [(name, fn, False) for name, fn in sync.items()]
    stages += [(name, fn, True) for name, fn in timed_async.items()]
    if args.only:
        stages = [s for s in stages if any(word in s[0] for word in args.only)]
    if args.profile is not None:
        # The stage of that name, else the first whose name holds it.
        chosen = [s for s in stages if s[0] == args.profile]
        chosen = chosen or [s for s in stages if args.profile in s[0]][:1]
        for _, fn, is_async in chosen:
            await profile(fn, is_async, args.top)
        stages = []
    results = []
    for name, fn, is_async in stages:
        results.append((name, await measure(fn, is_async, args.repeat, args.min_time)))
    await app.close(0)
    return results


async def profile(fn: Stage | AsyncStage, is_async: bool, top: int) -> None:
    n = 20_000
    profiler = cProfile.Profile()
    profiler.enable()
    if is_async:
        await _loops_async(fn, n)  # type: ignore[arg-type]
    else:
        _loops_sync(fn, n)  # type: ignore[arg-type]
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop, which `laneway serve` uses when it is installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per stage (median taken)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per run")
    parser.add_argument("--only", nargs="*", default=None, help="stages whose name holds a word")
    parser.add_argument("--profile", default=None, metavar="STAGE", help="cProfile one stage")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile")
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop's")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    # Decision lines are written as `laneway serve` writes them, to a sink that drops them.
    write_lines_to(DecisionLines(os.open(os.devnull, os.O_WRONLY)))
    proxy_settings = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    for name in (*proxy_settings, *EGRESS_VARIABLES.values()):
        os.environ.pop(name, None)  # the connection is in-process; no proxy may be chosen
    if not args.gc:
        gc.disable()
    with asyncio.Runner(loop_factory=None if args.asyncio else _uvloop()) as runner:
        results = runner.run(run_all(args))
    width = max((len(name) for name, _ in results), default=0)
    for name, us in results:
        sys.stdout.write(f"{name:<{width}}  {us:8.2f} us\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
