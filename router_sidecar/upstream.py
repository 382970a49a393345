"""A small HTTP/1.1 client for provider calls: pooled keep-alive connections and nothing more.

`engine.py` owns one `Upstreams` and sends every provider request through `Upstreams.post`; the
`Response` it returns is read whole (`read`) or piece by piece as the bytes arrive
(`next_chunk`, for streams). aiohttp's client did this job before, but per request it cost
about as much as the whole rest of the router (request and response objects, cookie and
redirect handling, a task per connection wait), and the router only ever sends one kind of
request: a POST with a small JSON body to a known base URL.

This module holds the pools and `Upstreams`; one connection's response parsing is in
`http1.py`, proxy settings and the CONNECT handshake in `egress_proxy.py`, the failure types in
`upstream_errors.py`.

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
the pool is made (`NO_PROXY` may hold names, domains, addresses and CIDR ranges; see
`no_proxy.py`), so the direct path pays one attribute test per request. A proxy that refuses
the tunnel is a `ConnectFailed`. Proxy credentials (`http://user:password@proxy:3128`, or the
files of a mounted Secret, read again when they change) become a `Proxy-Authorization` header
and appear in no message or log line.

Failures below HTTP raise `UpstreamError` subclasses, which `errors.classify_exception` maps
to fallback triggers: `ConnectFailed` and `Disconnected` (nothing or only part of the head came
back) are connection errors; `BrokenResponse` (not HTTP, bad framing, a body cut short) counts
as a server error. A total timeout raises `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from router_sidecar.egress_proxy import EgressProxies, Proxy, TunnelAnswer, bracketed, tunnel_status
from router_sidecar.http1 import Connection, Response
from router_sidecar.outbox import outbox_for
from router_sidecar.upstream_errors import (
    BrokenResponse,
    ConnectFailed,
    Disconnected,
    UpstreamError,
)

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_LIMIT",
    "USER_AGENT",
    "BrokenResponse",
    "ConnectFailed",
    "Disconnected",
    "Response",
    "UpstreamError",
    "Upstreams",
]


DEFAULT_LIMIT = 256
DEFAULT_KEEPALIVE_S = 30.0
USER_AGENT = "laneway-router"

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
        proxy: Proxy | None = None,
        proxies: EgressProxies | None = None,
    ) -> None:
        self.loop, self.host, self.port, self.tls = loop, host, port, tls
        self.limit, self.keepalive_s, self.proxy = limit, keepalive_s, proxy
        self.proxies = proxies  # the proxy's credentials as they are now (`proxy_now`)
        # Plain http through a proxy: each request line is absolute and carries the credentials.
        self.forward = proxy is not None and tls is None
        self.idle: list[Connection] = []
        self.in_use = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self.outbox = outbox_for(loop)  # requests leave at the end of the loop's turn

    async def acquire(self, connect_s: float, deadline: float) -> Connection:
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

    def take_idle(self) -> Connection | None:
        """A live idle connection, claimed at once, when one is free without waiting; else None
        (and `acquire` waits for or opens one). Saves the usual request a coroutine."""
        if self.in_use >= self.limit or not self.idle:
            return None
        conn = self._reuse()
        if conn is not None:
            self.in_use += 1
        return conn

    def _reuse(self) -> Connection | None:
        idle, now = self.idle, time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.abort()
        return None

    def proxy_now(self) -> Proxy | None:
        """The pool's proxy with its credentials as they are now (a Secret may have rotated)."""
        if self.proxy is None or self.proxies is None:
            return self.proxy
        return self.proxies.current(self.proxy)

    async def _connect(self, connect_s: float) -> Connection:
        proxy = self.proxy_now()
        try:
            async with asyncio.timeout(connect_s):
                if proxy is not None and self.tls is not None:
                    return await self._tunnel(proxy)
                host, port = (self.host, self.port) if proxy is None else (proxy.host, proxy.port)
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
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

    async def _tunnel(self, proxy: Proxy) -> Connection:
        """A TLS connection to the provider inside a CONNECT tunnel through `proxy`."""
        assert self.tls is not None
        transport, answer = await self.loop.create_connection(TunnelAnswer, proxy.host, proxy.port)
        try:
            transport.write(proxy.connect_request(self.host, self.port))
            status, line = tunnel_status(await answer.head)
            if not 200 <= status < 300:
                raise ConnectFailed(
                    f"cannot connect to {self._where()}: the proxy answered CONNECT with {line!r}"
                )
            conn = Connection(self)
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
        where = f"{bracketed(self.host)}:{self.port}"
        if self.proxy is not None:
            where += f" through the proxy {self.proxy.where}"
        return where

    def put_back(self, conn: Connection) -> None:
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
    # A lane sends the same few headers on every request: each set is written out once.
    return _header_block(tuple(headers.items()), auth)


@lru_cache(maxsize=256)
def _header_block(headers: tuple[tuple[str, str], ...], auth: str | None) -> bytes:
    lines = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    if auth is not None and not any(name.lower() == "authorization" for name, _ in headers):
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

        The egress proxy settings are read from the environment here, once (the credentials
        files again when they change)."""
        self._limit, self._keepalive_s = limit, keepalive_s
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls = tls
        self._proxies = EgressProxies()

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
            proxy = self._proxies.for_host(scheme, host, port)
            pool = _Pool(
                loop, host, port, tls, self._limit, self._keepalive_s, proxy, self._proxies
            )
            self._pools[key] = pool
        return pool

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_s: float,
        total_s: float,
        early_s: float | None = None,
    ) -> Response:
        """Send a POST and wait for the response head; the body is read from the Response.

        The whole call, body included, must take at most `total_s`. With `early_s` (shorter),
        so must getting a connection, the head and whatever body comes until the caller calls
        `Response.lift_early_deadline` (a stream's first chunk); TimeoutError otherwise."""
        key, line, absolute, auth = _target(url)
        pool = self._pools.get(key) or self._pool(key)
        if pool.forward:
            proxy = pool.proxy_now()
            line = absolute + (proxy.auth if proxy is not None else b"")
        now = pool.loop.time()
        deadline = now + total_s
        early = now + early_s if early_s is not None and early_s < total_s else None
        head = line + _header_lines(headers, auth) + _FIXED_HEADERS
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        conn = pool.take_idle() or await pool.acquire(connect_s, early or deadline)
        try:
            conn.send(data, deadline, early)
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
