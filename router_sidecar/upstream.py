"""A small HTTP/1.1 client for provider calls: pooled keep-alive connections and nothing more.

`engine.py` owns one `Upstreams` and sends every provider request through `Upstreams.post`; the
`Response` it returns is read whole (`read`) or piece by piece as the bytes arrive
(`next_chunk`, for streams). aiohttp's client did this job before, but per request it cost
about as much as the whole rest of the router (request and response objects, cookie and
redirect handling, a task per connection wait), and the router only ever sends one kind of
request: a POST with a small JSON body to a known base URL.

What it does: one connection pool per scheme, host and port, used last-in first-out, at most
`limit` connections in use per pool (further requests wait), idle connections dropped after
`keepalive_s`; TLS with the system's default verification; `Content-Length`, chunked and
read-until-close bodies; gzip and deflate bodies decoded; 1xx interim responses skipped. The
caller's total timeout runs from sending the request to the body's last byte, as aiohttp's
did; the connect timeout covers opening the connection (and the TLS handshake).

Egress proxies come from the environment, read once when `Upstreams` is built
(`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` and their lower-case forms, as `urllib` reads them). An
https provider behind a proxy is reached through a `CONNECT` tunnel, with TLS to the provider
inside it; an http provider gets its request in absolute form (`POST http://host/path`) sent to
the proxy. `NO_PROXY` hosts go direct. Whether a pool goes through a proxy is decided once, when
the pool is made, so the direct path pays one attribute test per request. A proxy that refuses
the tunnel is a `ConnectFailed`. Proxy credentials (`http://user:password@proxy:3128`) become a
`Proxy-Authorization` header and appear in no message or log line.

Failures below HTTP raise `UpstreamError` subclasses, which `errors.classify_exception` maps
to fallback triggers: `ConnectFailed` and `Disconnected` (nothing or only part of the head came
back) are connection errors; `BrokenResponse` (not HTTP, bad framing, a body cut short) counts
as a server error. A total timeout raises `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass_environment

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 256
DEFAULT_KEEPALIVE_S = 30.0
USER_AGENT = "laneway-router"

_MAX_HEAD_BYTES = 64 * 1024
_PAUSE_BYTES = 256 * 1024  # stop reading the socket while this much body waits for its reader

# Body framing of one response.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
# Where a chunked body is: a size line, chunk data, the CRLF after the data, the trailers.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class UpstreamError(Exception):
    """A provider call failed below HTTP."""


class ConnectFailed(UpstreamError):
    """The connection could not be opened: refused, unreachable, DNS or TLS failure."""


class Disconnected(UpstreamError):
    """The connection closed or broke before the response head was complete."""


class BrokenResponse(UpstreamError):
    """The provider's bytes are not a readable HTTP response, or its body was cut short."""


# ---------------------------------------------------------------------------------------------
# One connection: parses responses as bytes arrive and wakes the one reader waiting on it.


class _Connection(asyncio.Protocol):
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.active = False  # a request was sent and its response is not complete yet
        self.idle_since = 0.0
        self._loop = pool.loop
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._start_response()

    def _start_response(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.body_done = False
        self.keep_alive = False
        self._framing = _NO_BODY
        self._remaining = 0
        self._chunk_state = _SIZE
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._decoder: zlib._Decompress | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        if self._buf:
            self._buf += data
        else:
            self._buf = bytearray(data)
        try:
            self._parse()
        except BrokenResponse as exc:
            self._fail(exc)
            return
        if self._queued > _PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and self._error is None:
            try:
                if self.head_done and self._framing == _UNTIL_CLOSE:
                    self._finish_body()
                else:
                    self._error = self._lost_error(exc)
            except BrokenResponse as broken:
                self._error = broken
        self._cancel_timer()
        self._wake()

    def _lost_error(self, exc: Exception | None) -> UpstreamError:
        why = f": {exc}" if exc is not None else ""
        if not self.head_done:
            return Disconnected(f"the provider closed the connection before answering{why}")
        return BrokenResponse(f"the connection closed before the answer was complete{why}")

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        while not self.head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD_BYTES:
                    raise BrokenResponse("the response head is larger than 64 KiB")
                return
            head = bytes(self._buf[:end])
            del self._buf[: end + 4]
            self._read_head(head)
        if not self.body_done and self._buf:
            if self._framing == _CHUNKED:
                self._parse_chunked()
            elif self._framing == _LENGTH:
                take = bytes(self._buf[: self._remaining])
                del self._buf[: len(take)]
                self._remaining -= len(take)
                self._push(take)
                if self._remaining == 0:
                    self._finish_body()
            elif self._framing == _UNTIL_CLOSE:
                self._push(bytes(self._buf))
                self._buf.clear()

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BrokenResponse(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise BrokenResponse(f"malformed header line: {line[:60]!r}")
            headers.setdefault(name.strip().lower(), value.strip())
        if 100 <= status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.status, self.headers, self.head_done = status, headers, True
        connection = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
        self._set_decoder(headers.get("content-encoding", "").lower().strip())
        self._set_framing(status, headers)

    def _set_framing(self, status: int, headers: Mapping[str, str]) -> None:
        if status in (204, 304):
            self._finish_body()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = _CHUNKED
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise BrokenResponse(f"bad Content-Length {length[:20]!r}")
            self._framing, self._remaining = _LENGTH, int(length)
            if self._remaining == 0:
                self._finish_body()
        else:
            self._framing, self.keep_alive = _UNTIL_CLOSE, False

    def _set_decoder(self, encoding: str) -> None:
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS)

    def _parse_chunked(self) -> None:
        buf = self._buf
        while buf and not self.body_done:
            if self._chunk_state == _DATA:
                take = bytes(buf[: self._remaining])
                del buf[: len(take)]
                self._remaining -= len(take)
                self._push(take)
                if self._remaining == 0:
                    self._chunk_state = _DATA_END
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD_BYTES:
                    raise BrokenResponse("a chunk size line is too long")
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._chunk_state == _DATA_END:
                if line:
                    raise BrokenResponse("chunk data longer than its declared size")
                self._chunk_state = _SIZE
            elif self._chunk_state == _SIZE:
                self._start_chunk(line)
            elif not line:  # _TRAILER: an empty line ends the trailers and the body
                self._finish_body()

    def _start_chunk(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BrokenResponse(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise BrokenResponse(f"bad chunk size {size_text[:20]!r}")
        if size == 0:
            self._chunk_state = _TRAILER
        else:
            self._chunk_state, self._remaining = _DATA, size

    def _push(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise BrokenResponse(f"cannot decode the compressed body: {exc}") from None
        if data:
            self._chunks.append(data)
            self._queued += len(data)

    def _finish_body(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                raise BrokenResponse(f"cannot decode the compressed body: {exc}") from None
            if tail:
                self._chunks.append(tail)
            self._decoder = None
        self.body_done = True
        self.active = False
        self._cancel_timer()

    # -- waking the reader -----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.abort()
        self._wake()

    def time_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError("no complete answer within the total timeout"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait(self) -> None:
        """Until the protocol has news: head, body bytes, the end, or an error."""
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # -- use by Response and _Pool ---------------------------------------------------------------

    def send(self, data: bytes, deadline: float) -> None:
        self._start_response()
        self._error = None
        self.active = True
        self._timer = self._loop.call_at(deadline, self.time_out)
        assert self.transport is not None
        self.transport.write(data)

    def take_chunks(self) -> bytes:
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self._queued = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def has_chunks(self) -> bool:
        return bool(self._chunks)

    def reusable(self) -> bool:
        """The last response ended cleanly and the provider keeps the connection open."""
        return (
            not self.closed and self.keep_alive and self.body_done
            and not self._chunks and not self._buf
        )

    def abort(self) -> None:
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


# ---------------------------------------------------------------------------------------------
# The response the caller reads.


class Response:
    """One provider response: status and lower-cased headers at once, the body as it comes."""

    __slots__ = ("_conn", "_released", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        """The whole body; the connection goes back to its pool when it allows."""
        conn = self._conn
        try:
            while not conn.body_done:
                await conn.wait()
        except BaseException:
            self.close()
            raise
        body = conn.take_chunks()
        self.release()
        return body

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        conn = self._conn
        try:
            while not conn.has_chunks():
                if conn.body_done:
                    return b""
                await conn.wait()
        except BaseException:
            self.close()
            raise
        return conn.take_chunks()

    def release(self) -> None:
        """Done with the response: keep the connection for the next call if it is reusable."""
        if not self._released:
            self._released = True
            self._conn.pool.put_back(self._conn)

    def close(self) -> None:
        """Done with the response, dropping its connection (an answer cut off, a cancel)."""
        if not self._released:
            self._released = True
            self._conn.abort()
            self._conn.pool.put_back(self._conn)


# ---------------------------------------------------------------------------------------------
# Egress proxies.


@dataclass(frozen=True, slots=True)
class _Proxy:
    """An http:// egress proxy; `auth` is its `Proxy-Authorization` header line, or b""."""

    host: str
    port: int
    auth: bytes = field(default=b"", repr=False)

    @property
    def where(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"

    def connect_request(self, host: str, port: int) -> bytes:
        target = f"{_bracketed(host)}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
        return head + self.auth + b"\r\n"


def _parse_proxy(url: str | None) -> _Proxy | None:
    """The proxy a `*_PROXY` value names, or None (unset or unusable: logged, without the value)."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port:
        log.warning(
            "Ignoring an egress proxy setting: only http://host:port proxies are supported "
            "(scheme %r); provider calls go direct", parts.scheme,
        )
        return None
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(pair.encode())
    return _Proxy(parts.hostname, port, auth)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _TunnelAnswer(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT; TLS to the provider takes the connection over next."""

    def __init__(self) -> None:
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end >= 0:
            self.head.set_result(bytes(self._buf[:end]))
        elif len(self._buf) > _MAX_HEAD_BYTES:
            self.head.set_exception(ConnectFailed("the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            why = f": {exc}" if exc is not None else ""
            self.head.set_exception(
                ConnectFailed(f"the proxy closed the connection before answering CONNECT{why}")
            )


def _tunnel_status(head: bytes) -> tuple[int, str]:
    """The status code and line of a proxy's answer to CONNECT (code 0 if it is not HTTP)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return 0, line[:80]
    return int(parts[1]), line[:80]


# ---------------------------------------------------------------------------------------------
# Pools.


class _Pool:
    """Keep-alive connections to one scheme, host and port."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        limit: int,
        keepalive_s: float,
        proxy: _Proxy | None = None,
    ) -> None:
        self.loop, self.host, self.port, self.tls = loop, host, port, tls
        self.limit, self.keepalive_s, self.proxy = limit, keepalive_s, proxy
        # Plain http through a proxy: what follows the absolute-form request line, else None.
        self.forward = proxy.auth if proxy is not None and tls is None else None
        self.idle: list[_Connection] = []
        self.in_use = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    async def acquire(self, connect_s: float, deadline: float) -> _Connection:
        """A connection, new or idle; waits (until `deadline`) while `limit` are in use."""
        if self.in_use >= self.limit:
            slot = self.loop.create_future()
            self._queue.append(slot)
            try:
                async with asyncio.timeout_at(deadline):
                    await slot  # put_back hands its slot over
            except BaseException:
                if not slot.cancelled() and slot.done():
                    self._free_slot()  # handed over just as we gave up: pass it on
                raise
        else:
            self.in_use += 1
        try:
            return self._reuse() or await self._connect(min(connect_s, deadline - self.loop.time()))
        except BaseException:
            self._free_slot()
            raise

    def _reuse(self) -> _Connection | None:
        idle, now = self.idle, time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.abort()
        return None

    async def _connect(self, connect_s: float) -> _Connection:
        proxy = self.proxy
        try:
            async with asyncio.timeout(connect_s):
                if proxy is not None and self.tls is not None:
                    return await self._tunnel(proxy)
                host, port = (self.host, self.port) if proxy is None else (proxy.host, proxy.port)
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    host,
                    port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(
                f"cannot connect to {self._where()}: {exc.strerror or exc}"
            ) from exc
        return conn

    async def _tunnel(self, proxy: _Proxy) -> _Connection:
        """A TLS connection to the provider inside a CONNECT tunnel through `proxy`."""
        assert self.tls is not None
        transport, answer = await self.loop.create_connection(
            _TunnelAnswer, proxy.host, proxy.port
        )
        try:
            transport.write(proxy.connect_request(self.host, self.port))
            status, line = _tunnel_status(await answer.head)
            if not 200 <= status < 300:
                raise ConnectFailed(f"cannot connect to {self._where()}: the proxy answered "
                                    f"CONNECT with {line!r}")
            conn = _Connection(self)
            tls_transport = await self.loop.start_tls(
                transport, conn, self.tls, server_hostname=self.host
            )
        except BaseException:
            transport.abort()
            raise
        assert tls_transport is not None
        conn.connection_made(tls_transport)
        return conn

    def _where(self) -> str:
        where = f"{_bracketed(self.host)}:{self.port}"
        if self.proxy is not None:
            where += f" through the proxy {self.proxy.where}"
        return where

    def put_back(self, conn: _Connection) -> None:
        if conn.reusable():
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.abort()
        self._free_slot()

    def _free_slot(self) -> None:
        while self._queue:
            slot = self._queue.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes to the next waiter
                return
        self.in_use -= 1

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()


@lru_cache(maxsize=256)
def _target(url: str) -> tuple[tuple[str, str, int], bytes, bytes, str | None]:
    """((scheme, host, port), the request line and Host header in origin and in absolute form
    (for a forward proxy), basic auth) of a URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if port != default:
        shown += f":{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    line = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n".encode()
    absolute = f"POST http://{shown}{path} HTTP/1.1\r\nHost: {shown}\r\n".encode()
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    return (parts.scheme, host, port), line, absolute, auth


def _header_lines(headers: Mapping[str, str], auth: str | None) -> bytes:
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    if auth is not None and not any(name.lower() == "authorization" for name in headers):
        lines.append(f"Authorization: {auth}\r\n")
    return "".join(lines).encode()


_FIXED_HEADERS = (
    f"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nUser-Agent: {USER_AGENT}\r\n".encode()
)


class Upstreams:
    """Every provider connection pool of one sidecar, keyed by scheme, host and port."""

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls` verifies https providers; by default the system's trust store does.

        The egress proxy settings are read from the environment here, once."""
        self._limit, self._keepalive_s = limit, keepalive_s
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls = tls
        self._proxy_env = getproxies()
        self._proxies = {
            scheme: proxy
            for scheme in ("http", "https")
            if (proxy := _parse_proxy(self._proxy_env.get(scheme))) is not None
        }

    def _pool(self, key: tuple[str, str, int]) -> _Pool:
        pool = self._pools.get(key)
        if pool is None:
            scheme, host, port = key
            tls = None
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            loop = asyncio.get_running_loop()
            proxy = self._proxy_for(scheme, host)
            pool = _Pool(loop, host, port, tls, self._limit, self._keepalive_s, proxy)
            self._pools[key] = pool
        return pool

    def _proxy_for(self, scheme: str, host: str) -> _Proxy | None:
        proxy = self._proxies.get(scheme)
        if proxy is None or proxy_bypass_environment(host, self._proxy_env):
            return None
        log.debug("Provider %s reached through the proxy %s", host, proxy.where)
        return proxy

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_s: float,
        total_s: float,
    ) -> Response:
        """Send a POST and wait for the response head; the body is read from the Response."""
        key, line, absolute, auth = _target(url)
        pool = self._pool(key)
        if pool.forward is not None:
            line = absolute + pool.forward
        deadline = pool.loop.time() + total_s
        head = line + _header_lines(headers, auth) + _FIXED_HEADERS
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        conn = await pool.acquire(connect_s, deadline)
        try:
            conn.send(data, deadline)
            while not conn.head_done:
                await conn.wait()
        except BaseException:
            conn.abort()
            pool.put_back(conn)
            raise
        return Response(conn)

    def close(self) -> None:
        """Close every idle connection; connections in use close when their caller is done."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
