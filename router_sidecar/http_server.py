"""The sidecar's HTTP/1.1 server: an asyncio protocol around httptools' request parser (llhttp).

Every request an application makes passes through here, so this layer is kept as thin as the
protocol allows: one parser per connection, one task per request (so that a client going away
cancels its handler, and through it the upstream call), whole responses written in one send, and
streamed responses sent with chunked transfer encoding as the handler produces them. On this
project's benchmark machine aiohttp's own server answered about 9,000 trivial requests per
second on one core and this one about 50,000; the difference is most of the sidecar's budget.

What it does for the handler:
- `Request` holds the method, path, query, headers (names lower-cased), body and peer address.
- Bodies over `max_body_bytes` are not read: the handler gets the request at once with
  `too_large` set (and answers 413), and the connection closes after that answer.
- `Expect: 100-continue` is answered before the body is read; pipelined requests are answered in
  order; HTTP/1.0 and `Connection: close` are honoured; HEAD gets the GET answer without a body.
- A request head over `MAX_HEAD_BYTES` is a 431, a request the parser rejects a 400, and a
  connection idle for `idle_timeout_s` (including one that never finishes its request) closes.

`serve()` starts listening; `HttpServer.close(grace_s)` stops accepting, lets requests in flight
finish for up to `grace_s` and then cuts what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import cast

import httptools

from router_sidecar.outbox import Outbox, outbox_for

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_QUEUED_REQUESTS = 16  # pipelined requests read ahead before reading pauses
DEFAULT_IDLE_TIMEOUT_S = 75.0
LINGER_S = 2.0  # how long a rejected body may keep arriving after the answer

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_DATA_CHUNK = b"%s%x\r\n%s\r\n"
_LAST_DATA_CHUNK = _DATA_CHUNK + _LAST_CHUNK


class Request:
    """One parsed request. `headers` has lower-cased names; repeated ones are joined by ", "."""

    __slots__ = (
        "_conn",
        "body",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "remote",
        "too_large",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        remote: str | None,
        keep_alive: bool,
        conn: _Connection | None = None,
    ) -> None:
        self.method, self.path, self.query = method, path, query
        self.headers, self.body, self.remote = headers, body, remote
        self.keep_alive, self.too_large = keep_alive, False
        self._conn = conn

    def open_stream(self, status: int, headers: dict[str, str]) -> Stream:
        """Start a streamed answer, which the handler then returns. Nothing is sent yet: the
        head goes out with the first bytes written, so an error before them can still be
        answered as a whole response."""
        if self._conn is None:
            raise RuntimeError("the request is not attached to a connection")
        # HTTP/1.0 has no chunked encoding: the stream ends when the connection closes.
        chunked = self._conn.parser.get_http_version() != "1.0"
        if not chunked:
            self._conn.closing = True
        return Stream(self._conn, status, headers, chunked=chunked)


class Response:
    """A whole answer: written with its head in one send."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


Handler = Callable[[Request], Awaitable["Response | Stream"]]
ErrorAnswer = Callable[[int, str], Response]


class _Clock:
    """The `Date` header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_clock = _Clock()


_STATUS_LINES: dict[int, str] = {}


def _head(status: int, headers: dict[str, str], framing: str, close: bool) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    end = "Connection: close\r\n\r\n" if close else "\r\n"
    return f"{line}{fields}Date: {_clock.date()}\r\n{framing}{end}".encode("latin-1")


class Stream:
    """A streamed answer: chunked for HTTP/1.1 clients, ended by closing for HTTP/1.0 ones.

    `write` sends what it is given at once (the head with the first bytes) and waits only while
    the client reads slower than the stream arrives; it raises ConnectionResetError once the
    client has gone.
    """

    __slots__ = ("_chunked", "_conn", "_headers", "_started", "_status", "ended")

    def __init__(
        self, conn: _Connection, status: int, headers: dict[str, str], chunked: bool
    ) -> None:
        self._conn, self._status, self._headers = conn, status, headers
        self._chunked = chunked
        self._started = False
        self.ended = False

    def _frame(self, data: bytes, last: bool) -> bytes:
        head = b""
        if not self._started:
            self._started = True
            framing = "Transfer-Encoding: chunked\r\n" if self._chunked else ""
            head = _head(self._status, self._headers, framing, self._conn.closing)
        if not self._chunked:
            return head + data
        if not data:
            return head + _LAST_CHUNK if last else head
        # One copy of the data, with its chunk's size line and (at the end) the last chunk.
        return (_LAST_DATA_CHUNK if last else _DATA_CHUNK) % (head, len(data), data)

    async def write(self, data: bytes, *, last: bool = False) -> None:
        if self.ended:
            if data:
                raise RuntimeError("write after the end of the stream")
            return
        self.ended = last
        await self._conn.send(self._frame(data, last))

    async def end(self, data: bytes = b"") -> None:
        await self.write(data, last=True)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        self.closing = False
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.paused_reading = False
        self.drain: asyncio.Future[None] | None = None
        # When the connection last had nothing to do (None while a request is answered): a
        # request must arrive whole within the idle timeout from then; see HttpServer._sweep.
        self.idle_since: float | None = time.monotonic()
        self.last_request: Request | None = None
        # The message being parsed.
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._skipping = False  # a too-large body: the rest is not read

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) and peer else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client went away: stop its work, and the upstream call
        self._wake_writer(ConnectionResetError("the client closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self._skipping or self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported by this router.")
        except httptools.HttpParserError as exc:
            # An exception raised in a callback reaches here wrapped by the parser.
            if isinstance(exc.__context__, _HeadTooLarge) or self._head_bytes > MAX_HEAD_BYTES:
                self._reject(431, f"The request head is over {MAX_HEAD_BYTES} bytes.")
            elif not self._skipping:
                self._reject(400, f"Malformed HTTP request: {exc}.")

    def pause_writing(self) -> None:
        if self.drain is None:
            self.drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer(None)

    def eof_received(self) -> bool:
        # A client that stops sending has given up on its answers (HTTP clients do not
        # half-close to wait): close, which cancels the request in flight and its upstream call.
        return False

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw_headers = []
        self._headers = {}
        self._body = []
        self._head_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        raw = self._raw_headers
        headers = self._headers = {
            name.lower().decode("latin-1"): value.decode("latin-1") for name, value in raw
        }
        if len(headers) < len(raw):  # a repeated field: its values joined, in order
            joined: dict[str, list[str]] = {}
            for name, value in raw:
                joined.setdefault(name.lower().decode("latin-1"), []).append(
                    value.decode("latin-1")
                )
            headers = self._headers = {name: ", ".join(values) for name, values in joined.items()}
        length = headers.get("content-length")
        limit = self.server.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            self._too_large()
            return
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.server.outbox.write(self.transport, _CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._skipping:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.server.max_body_bytes:
            self._too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._skipping:
            return
        self._enqueue(self._request(b"".join(self._body), self.parser.should_keep_alive()))

    # -- requests ----------------------------------------------------------------------------

    def _request(self, body: bytes, keep_alive: bool) -> Request:
        method = self.parser.get_method().decode("ascii", "replace")
        raw = self._url
        if raw[:1] == b"/" and b"?" not in raw and b"#" not in raw:
            path, query = raw.decode("utf-8", "replace"), ""
        else:
            url = httptools.parse_url(raw)
            path = url.path.decode("utf-8", "replace") if url.path else "/"
            query = url.query.decode("utf-8", "replace") if url.query else ""
        return Request(method, path, query, self._headers, body, self.remote, keep_alive, self)

    def _too_large(self) -> None:
        """Answer now (413 by the handler); what else arrives is read and dropped, and after the
        answer the connection closes (see `_linger`)."""
        request = self._request(b"", keep_alive=False)
        request.too_large = True
        self._skipping = True
        self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        self.idle_since = None
        self.queue.append(request)
        if self.task is None:
            loop = self.server.loop or asyncio.get_running_loop()
            self.task = loop.create_task(self._answer_queued())
        elif len(self.queue) >= MAX_QUEUED_REQUESTS and self.transport and not self._skipping:
            self.transport.pause_reading()
            self.paused_reading = True

    async def _answer_queued(self) -> None:
        try:
            # `closing` (set by Connection: close, a parser error, an HTTP/1.0 stream) means no
            # requests after those already queued; the one asking to close is the last.
            while self.queue and not self.closing_now():
                request = self.queue.popleft()
                if self.paused_reading and self.transport is not None:
                    self.paused_reading = False
                    self.transport.resume_reading()
                await self._answer(request)
                if not request.keep_alive:
                    self.closing = True
                    self.queue.clear()
        finally:
            self.task = None
            if self.transport is not None and not self.transport.is_closing():
                if self._skipping:
                    self._linger()
                elif self.closing or self.server.stopping:
                    self.server.outbox.flush()  # the last answer first
                    self.transport.close()
                else:
                    self.idle_since = time.monotonic()

    def _linger(self) -> None:
        """Close after a 413 without losing the answer: closing a socket with unread input makes
        the kernel reset the connection, which can destroy the answer before the client reads
        it. So: end our side, drop what still arrives, and close when the client does (or after
        LINGER_S)."""
        transport = self.transport
        if transport is None:
            return
        self.server.outbox.flush()  # the answer before the end of our side
        if transport.can_write_eof():
            transport.write_eof()
        loop = self.server.loop or asyncio.get_running_loop()
        loop.call_later(LINGER_S, transport.close)

    def closing_now(self) -> bool:
        return self.transport is None or self.transport.is_closing() or self.server.stopping

    async def _answer(self, request: Request) -> None:
        answer: Response | Stream
        try:
            answer = await self.server.handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("Unexpected error answering %s %s", request.method, request.path)
            answer = self.server.error_answer(500, "The router failed unexpectedly; see its log.")
        if isinstance(answer, Stream):
            if not answer.ended:
                with contextlib.suppress(ConnectionResetError):
                    await answer.end()
            if not answer._chunked:
                self.closing = True
            return
        self._send_whole(request, answer)

    def _send_whole(self, request: Request, answer: Response) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        close = not request.keep_alive or self.server.stopping
        body = answer.body
        head = _head(answer.status, answer.headers, f"Content-Length: {len(body)}\r\n", close)
        if request.method != "HEAD" and body:
            head += body
        self.server.outbox.write(self.transport, head)

    async def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.server.outbox.write(transport, data)
        if self.drain is not None:
            await self.drain

    def _wake_writer(self, exc: Exception | None) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            if exc is None:
                drain.set_result(None)
            else:
                drain.set_exception(exc)
                drain.exception()  # retrieved here: nobody may be waiting on it

    def _reject(self, status: int, message: str) -> None:
        """A request the parser cannot take: answer it if nothing else is owed, then close."""
        self._skipping = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.closing = True
        if self.task is None:
            answer = self.server.error_answer(status, message)
            request = Request("GET", "/", "", {}, b"", self.remote, keep_alive=False)
            self._send_whole(request, answer)
            self._linger()

    def close_if_idle(self) -> None:
        if self.task is None and self.transport is not None:
            self.server.outbox.flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.server.outbox.flush()
            self.transport.abort()


class _HeadTooLarge(Exception):
    pass


class HttpServer:
    """Serves `handler` on a listening socket; see the module docstring."""

    def __init__(
        self,
        handler: Handler,
        error_answer: ErrorAnswer,
        *,
        max_body_bytes: int,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.error_answer = error_answer
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.outbox = Outbox()  # its loop's own from `serve` on

    async def serve(self, host: str, port: int) -> list[tuple[str, int]]:
        """Listen on host:port (port 0 picks a free one); the addresses listened on."""
        loop = self.loop = asyncio.get_running_loop()
        self.outbox = outbox_for(loop)
        if self.idle_timeout_s > 0:
            self._sweeper = loop.create_task(self._sweep(), name="http-idle-sweep")
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        return [sock.getsockname()[:2] for sock in self._server.sockets]

    async def close(self, grace_s: float) -> None:
        """Stop accepting; finish requests in flight for up to `grace_s`; close the rest."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + grace_s
        while any(conn.task is not None for conn in self.connections):
            if time.monotonic() >= deadline:
                log.warning("Cutting %d connections still busy at shutdown", len(self.connections))
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep(self) -> None:
        """Close connections idle for longer than the idle timeout, checking a few times per
        timeout (cheaper than a timer per request)."""
        timeout = self.idle_timeout_s
        every = min(max(timeout / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self.connections):
                since = conn.idle_since
                if since is not None and now - since > timeout:
                    log.debug("Closing a connection idle for %.0fs", now - since)
                    conn.close_if_idle()
