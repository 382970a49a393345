"""Egress proxy settings and the CONNECT handshake for the provider clients.

`EgressProxies` reads the settings once (`egress_settings`: Laneway's own `LANEWAY_EGRESS_*`
variables when any is set, else `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` or their lower-case forms)
and names the `Proxy`, or none, for each provider host: `upstream.Upstreams` asks it once per pool
(and `current` for the credentials at each new connection), the operator's health probes once per
probe. Credentials from a mounted Secret are read again when its files change. `upstream._Pool`
opens CONNECT tunnels with `Proxy.connect_request`, reads the answer with `TunnelAnswer` and
judges it with `tunnel_status`; forward-proxied http:// requests use `Proxy.auth` and
`bracketed`. Credentials never appear in a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies

from router_sidecar.no_proxy import NoProxy
from router_sidecar.upstream_errors import MAX_HEAD_BYTES, ConnectFailed

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}

# Laneway's own names for the provider egress settings. They go to the operator (Helm's
# `egressProxy` values) and from it into each injected sidecar, and they reach only provider
# traffic: the Kubernetes clients never read them.
EGRESS_VARIABLES = {
    "https": "LANEWAY_EGRESS_HTTPS_PROXY",
    "http": "LANEWAY_EGRESS_HTTP_PROXY",
    "no": "LANEWAY_EGRESS_NO_PROXY",
}


# A directory holding the proxy's `username` and `password` (a mounted Secret): the way to give a
# proxy credentials without writing them into an environment variable or a pod spec.
CREDENTIALS_VARIABLE = "LANEWAY_EGRESS_PROXY_CREDENTIALS"
CREDENTIALS_MOUNT = "/var/run/secrets/laneway-egress-proxy"


def egress_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The egress settings as {"https"|"http"|"no": value}: from `LANEWAY_EGRESS_*` when any of
    them is set, else from the usual proxy variables (lower-case first, as `urllib` reads them).

    `environ` defaults to the process environment."""
    source = os.environ if environ is None else environ
    own = {key: source[name] for key, name in EGRESS_VARIABLES.items() if source.get(name)}
    if own:
        return own
    if environ is None:
        return getproxies()
    usual = {key: source.get(f"{key}_proxy") or source.get(f"{key.upper()}_PROXY")
             for key in EGRESS_VARIABLES}
    return {key: value for key, value in usual.items() if value}


def has_credentials(url: str) -> bool:
    """Whether a proxy URL carries a user name or password."""
    return "@" in urlsplit(url if "://" in url else f"http://{url}").netloc


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http:// egress proxy; `authorization` is its `Proxy-Authorization` value, or "";
    `url_credentials` says it came from the proxy URL (else from the credentials files)."""

    host: str
    port: int
    authorization: str = field(default="", repr=False)
    url_credentials: bool = False

    @property
    def where(self) -> str:
        return f"{bracketed(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy's address as a URL without credentials."""
        return f"http://{self.where}"

    @property
    def auth(self) -> bytes:
        """The `Proxy-Authorization` header line, or b"" without credentials."""
        if not self.authorization:
            return b""
        return b"Proxy-Authorization: %s\r\n" % self.authorization.encode()

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
    if parts.username is None:
        return Proxy(parts.hostname, port)
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return Proxy(parts.hostname, port, "Basic " + base64.b64encode(pair.encode()).decode(), True)


def proxy_credentials(directory: str) -> str:
    """The `Proxy-Authorization` value from the `username` and `password` files in `directory`
    (a trailing newline dropped), or "" when they cannot be read (logged, naming the file)."""
    values = []
    for name in ("username", "password"):
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as fh:
                values.append(fh.read().rstrip("\r\n"))
        except OSError as exc:
            log.warning("Cannot read the egress proxy's %s from %s (%s); the proxy is used "
                        "without credentials", name, path, exc.strerror or exc)
            return ""
    return "Basic " + base64.b64encode(":".join(values).encode()).decode()


# How often the credentials files are looked at again (two stat calls): a rotated Secret, which
# the kubelet swaps into the mount within a minute or so, is in use within this much more.
CREDENTIALS_RECHECK_S = 10.0


class EgressProxies:
    """The egress proxy settings: which proxy, if any, reaches a provider, with what credentials.

    `settings` maps `http`, `https` and `no` to values, and `credentials_dir` names a directory
    with the proxies' `username` and `password`, which apply to proxy URLs without credentials of
    their own. By default both come from the environment (`egress_settings()` and
    `LANEWAY_EGRESS_PROXY_CREDENTIALS`). The settings are read once; the credentials files are
    read again when they change (looked at every `recheck_s` at most), so a rotated Secret takes
    effect without a restart: new connections and probes use it, open tunnels keep theirs."""

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        credentials_dir: str | None = None,
        *,
        recheck_s: float | None = None,
    ) -> None:
        if settings is None:
            settings = egress_settings()
            credentials_dir = os.environ.get(CREDENTIALS_VARIABLE)
        self._proxies = {
            scheme: proxy
            for scheme in ("http", "https")
            if (proxy := parse_proxy(settings.get(scheme))) is not None
        }
        self._no_proxy = NoProxy.parse(settings.get("no"))
        self._dir = credentials_dir if self._proxies else None
        self._recheck_s = CREDENTIALS_RECHECK_S if recheck_s is None else recheck_s
        self._checked = -math.inf
        self._read = False
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._authorization = ""
        self._with_files: dict[tuple[str, int], Proxy] = {}
        self._look_at_files()

    def __bool__(self) -> bool:
        return bool(self._proxies)

    def for_host(self, scheme: str, host: str, port: int | None = None) -> Proxy | None:
        """The proxy for a provider at `scheme://host:port`, or None when it goes direct."""
        proxy = self._proxies.get(scheme)
        if proxy is None:
            return None
        if self._no_proxy.bypasses(host, port or DEFAULT_PORTS.get(scheme)):
            return None
        log.debug("Provider %s reached through the proxy %s", host, proxy.where)
        return self.current(proxy)

    def current(self, proxy: Proxy) -> Proxy:
        """`proxy` (one `for_host` gave, perhaps a while ago) with the credentials files as they
        are now, unless its URL carries credentials of its own."""
        if self._dir is None or proxy.url_credentials:
            return proxy
        if time.monotonic() - self._checked >= self._recheck_s:
            self._look_at_files()
        if proxy.authorization == self._authorization:
            return proxy
        key = (proxy.host, proxy.port)
        got = self._with_files.get(key)
        if got is None:
            got = self._with_files[key] = replace(proxy, authorization=self._authorization)
        return got

    def _look_at_files(self) -> None:
        """Read the credentials files again if they changed since they were last read (the
        first time, read them in any case; unreadable files are a WARNING naming the file)."""
        if self._dir is None:
            return
        self._checked = time.monotonic()
        stamp = _stamp(self._dir)
        if self._read and stamp == self._stamp:
            return
        first, self._read, self._stamp = not self._read, True, stamp
        authorization = proxy_credentials(self._dir)
        if authorization != self._authorization:
            self._authorization, self._with_files = authorization, {}
            if not first:
                log.info(
                    "The egress proxy credentials in %s changed; new connections use them",
                    self._dir,
                )


def _stamp(directory: str) -> tuple[tuple[int, int, int], ...] | None:
    """What identifies the current `username` and `password` files (a Secret update replaces
    them), or None if either cannot be read."""
    try:
        stats = [os.stat(os.path.join(directory, name)) for name in ("username", "password")]
    except OSError:
        return None
    return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


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
