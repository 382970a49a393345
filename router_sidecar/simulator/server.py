"""The simulated provider's HTTP server: model endpoints, `/_control`, and its Python API.

`laneway simulate-provider` (`laneway.cmd_simulate_provider`), the demo, the benchmarks and the
tests run a `SimulatedProvider`. The wire format (`openai_wire` or `anthropic_wire`) decides what
the requests and answers look like; `answers` decides what the model says; this module decides
when and how it answers (latency, error modes, dropped and held connections).

In mode `down` the model endpoints reset every connection without a response, while `/_control`
and `/healthz` on the same port keep working, so the mode can be switched back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from router_sidecar.simulator.answers import Answer, SimRequest, compose_answer
from router_sidecar.simulator.anthropic_wire import AnthropicWire
from router_sidecar.simulator.openai_wire import OpenAIWire
from router_sidecar.simulator.settings import (
    ControlError,
    Settings,
    apply_control,
    wants_count_reset,
)
from router_sidecar.simulator.wire import RequestInvalid, WireFormat

log = logging.getLogger(__name__)

WIRES: dict[str, type[OpenAIWire] | type[AnthropicWire]] = {
    "openai": OpenAIWire,
    "anthropic": AnthropicWire,
}

# Modes answered with a plain provider error, and that error's kind.
_ERROR_MODES = {"error500": "server", "overloaded": "overloaded", "ratelimit": "ratelimit"}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
# Prompts can be large (that is what context_overflow tests); providers accept tens of MB.
_MAX_BODY_BYTES = 64 * 1024 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


class SimulatedProvider:
    """A fake OpenAI or Anthropic provider on a real socket, steered by `set_mode` or `/_control`.

    Use it on the running loop (`await start()` / `await stop()`, or `async with`), or on a
    background thread with its own loop (`with SimulatedProvider(...) as sim:` or
    `run_in_thread(...)`) from synchronous code.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "sim-model",
        api: str = "openai",
        latency_ms: float = 0,
        api_key: str | None = None,
    ) -> None:
        if api not in WIRES:
            raise ValueError(f"api must be one of {', '.join(WIRES)}; got {api!r}")
        self._host = host
        self._port = port
        self._model = model
        self._api_key = api_key
        self._wire: WireFormat = WIRES[api]()
        self._initial = apply_control(Settings(), Settings(), {"latency_ms": latency_ms})
        self._settings = self._initial
        self._requests = 0
        self._models_requests = 0
        self._held: set[asyncio.BaseTransport] = set()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

        # The bodies that never change, encoded once.
        self._models_body = self._wire.models(model)
        self._stock_errors = {
            kind: self._wire.error(kind) for kind in ("auth", "server", "overloaded", "ratelimit")
        }

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the real one once started, even when constructed with 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL including `/v1`, as an SDK's `base_url` expects it."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/v1"

    @property
    def state(self) -> dict[str, Any]:
        """The same object `GET /_control` returns."""
        s = self._settings
        return {
            "mode": s.mode,
            "latency_ms": s.latency_ms,
            "chunk_delay_ms": s.chunk_delay_ms,
            "answer": s.answer,
            "tool_call": s.tool_call,
            "context_window": s.context_window,
            "requests": self._requests,
            "models_requests": self._models_requests,
            "hanging": len(self._held),
            "model": self._model,
            "api": self._wire.api,
        }

    def set_mode(self, mode: str | None = None, **opts: Any) -> None:
        """Change behaviour like `POST /_control`; raises `ControlError` for bad values."""
        body = dict(opts)
        if mode is not None:
            body["mode"] = mode
        self._apply(body)

    async def start(self) -> None:
        """Listen on host:port; port 0 picks a free port, readable from `.port` afterwards."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_post(self._wire.chat_path, self._chat)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/_control", self._get_control)
        app.router.add_post("/_control", self._post_control)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

        # No access log: benchmarks push thousands of requests a second through here.
        # Handler cancellation ends held requests (mode timeout) when their client leaves.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and end every held request; safe to call twice."""
        for transport in list(self._held):
            _reset(transport)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimulatedProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> SimulatedProvider:
        """Run on a new background thread with its own event loop; returns once listening."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=f"sim-provider-{self._model}", daemon=True
        )
        thread.start()
        ready.result(timeout)
        self._thread = thread
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a provider started with `start_in_thread` and wait for its thread to end."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimulatedProvider:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_thread()

    # -- model endpoints ----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._requests += 1
        settings = self._settings
        refused = await self._gate(request, settings)
        if refused is not None:
            return refused

        try:
            req = self._wire.parse(await request.json(), request.headers)
        except ValueError:
            return self._error("bad_request", "We could not parse the JSON body of your request.")
        except RequestInvalid as exc:
            return self._error("bad_request", exc.message, exc.param)

        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        failure = self._failure(settings, req)
        if failure is not None:
            return failure

        answer = compose_answer(req, settings, self._model)
        response_id = self._wire.new_id()
        if settings.mode == "stream_error":
            return await self._break_off(request, req, answer, response_id)
        if req.stream:
            return await self._stream(request, req, answer, response_id, settings.chunk_delay_ms)
        return web.Response(
            body=self._wire.render(req, answer, response_id),
            content_type="application/json",
            headers={self._wire.request_id_header: response_id},
        )

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        self._models_requests += 1
        settings = self._settings
        refused = await self._gate(request, settings)
        if refused is not None:
            return refused
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        if settings.mode in _ERROR_MODES:
            return self._error(_ERROR_MODES[settings.mode])
        return web.Response(body=self._models_body, content_type="application/json")

    async def _gate(self, request: web.Request, settings: Settings) -> web.StreamResponse | None:
        """What happens before the request is read: dropped, held, or refused for its key."""
        if settings.mode == "down":
            _reset(request.transport)
            # Never sent: the connection is gone, and aiohttp drops the write quietly.
            return web.Response(status=503)
        if settings.mode == "timeout":
            return await self._hold(request)
        if self._api_key is not None and not self._wire.authorized(request.headers, self._api_key):
            return self._error("auth")
        return None

    def _failure(self, settings: Settings, req: SimRequest) -> web.Response | None:
        """The error response the mode or the prompt's length calls for, if any."""
        if settings.mode in _ERROR_MODES:
            return self._error(_ERROR_MODES[settings.mode])
        limit = settings.context_window or self._wire.default_context_window
        if settings.mode == "context_overflow":
            status, body = self._wire.context_error(max(req.prompt_tokens, limit + 1), limit)
            return web.Response(status=status, body=body, content_type="application/json")
        if settings.context_window is not None and req.prompt_tokens > settings.context_window:
            status, body = self._wire.context_error(req.prompt_tokens, limit)
            return web.Response(status=status, body=body, content_type="application/json")
        return None

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        """Accept the request and never answer; aiohttp cancels this when the client leaves."""
        transport = request.transport
        if transport is None:
            return web.Response(status=504)
        self._held.add(transport)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._held.discard(transport)
        return web.Response(status=504)  # not reached: only cancellation ends the wait

    async def _stream(
        self,
        request: web.Request,
        req: SimRequest,
        answer: Answer,
        response_id: str,
        chunk_delay_ms: float,
    ) -> web.StreamResponse:
        events = self._wire.stream_events(req, answer, response_id)
        response = web.StreamResponse(
            headers={**_SSE_HEADERS, self._wire.request_id_header: response_id}
        )
        try:
            await response.prepare(request)
            if not chunk_delay_ms:
                await response.write(b"".join(events))
                return response
            for index, event in enumerate(events):
                if index:
                    await asyncio.sleep(chunk_delay_ms / 1000)
                await response.write(event)
        except ConnectionError:
            log.debug("simulated stream ended early: the client disconnected")
        return response

    async def _break_off(
        self, request: web.Request, req: SimRequest, answer: Answer, response_id: str
    ) -> web.StreamResponse:
        """Mode stream_error: send part of the answer, then close the connection mid-body."""
        if req.stream:
            events = self._wire.stream_events(req, answer, response_id)
            payload = b"".join(events[: len(events) // 2]) + self._wire.stream_error_event()
            response = web.StreamResponse(headers=_SSE_HEADERS)
        else:
            body = self._wire.render(req, answer, response_id)
            payload = body[: len(body) // 2]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(body)
        try:
            await response.prepare(request)
            await response.write(payload)
        except ConnectionError:
            return response
        if request.transport is not None:
            # A graceful close after the partial body: the client sees it end too early.
            request.transport.close()
        return response

    # -- control and health -------------------------------------------------------------------

    async def _get_control(self, request: web.Request) -> web.Response:
        return web.json_response(self.state)

    async def _post_control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            self._apply(body)
        except ControlError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error("not_found", f"Invalid URL ({request.method} {request.path})")

    def _apply(self, body: Mapping[str, Any]) -> None:
        settings = apply_control(self._settings, self._initial, body)
        if wants_count_reset(body):
            self._requests = 0
            self._models_requests = 0
        if settings != self._settings:
            log.info(
                "simulated provider %s now in mode %s, latency %sms",
                self._model,
                settings.mode,
                settings.latency_ms,
            )
        self._settings = settings

    def _error(
        self, kind: str, message: str | None = None, param: str | None = None
    ) -> web.Response:
        if message is None and param is None and kind in self._stock_errors:
            status, body = self._stock_errors[kind]
        else:
            status, body = self._wire.error(kind, message, param)
        headers = {"Retry-After": "1"} if kind == "ratelimit" else None
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.start())
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc)
            return
        self._loop = loop
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None


def run_in_thread(**kwargs: Any) -> SimulatedProvider:
    """Start a `SimulatedProvider(**kwargs)` on a background thread; end it with `stop_thread()`."""
    return SimulatedProvider(**kwargs).start_in_thread()


def _reset(transport: asyncio.BaseTransport | None) -> None:
    """Drop a connection with a TCP reset, the way a dead or overloaded host does."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()
