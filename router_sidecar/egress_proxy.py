"""Egress proxy settings and the CONNECT handshake for the sidecar's provider client.

`upstream.Upstreams` reads `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` once and, for each new pool, picks
a `Proxy` (or none). `upstream._Pool` opens CONNECT tunnels with `Proxy.connect_request`, reads the
answer with `TunnelAnswer` and judges it with `tunnel_status`; forward-proxied http:// requests use
`Proxy.auth` and `bracketed`. Credentials never appear in a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from router_sidecar.upstream_errors import MAX_HEAD_BYTES, ConnectFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http:// egress proxy; `auth` is its `Proxy-Authorization` header line, or b""."""

    host: str
    port: int
    auth: bytes = field(default=b"", repr=False)

    @property
    def where(self) -> str:
        return f"{bracketed(self.host)}:{self.port}"

    def connect_request(self, host: str, port: int) -> bytes:
        target = f"{bracketed(host)}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
        return head + self.auth + b"\r\n"


def parse_proxy(url: str | None) -> Proxy | None:
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
            "(scheme %r); provider calls go direct",
            parts.scheme,
        )
        return None
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(pair.encode())
    return Proxy(parts.hostname, port, auth)


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TunnelAnswer(asyncio.Protocol):
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
        elif len(self._buf) > MAX_HEAD_BYTES:
            self.head.set_exception(ConnectFailed("the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            why = f": {exc}" if exc is not None else ""
            self.head.set_exception(
                ConnectFailed(f"the proxy closed the connection before answering CONNECT{why}")
            )


def tunnel_status(head: bytes) -> tuple[int, str]:
    """The status code and line of a proxy's answer to CONNECT (code 0 if it is not HTTP)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return 0, line[:80]
    return int(parts[1]), line[:80]
