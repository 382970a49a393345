"""The provider HTTP client behind an egress proxy: CONNECT tunnels to https providers,
absolute-form requests to plain http ones, NO_PROXY bypass and proxies that refuse, against a
small proxy written here on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from router_sidecar import egress_proxy, errors
from router_sidecar.egress_proxy import EgressProxies
from router_sidecar.upstream import ConnectFailed, Upstreams
from tests.unit.test_upstream import (
    Reader,
    Server,
    Writer,
    keep_answering,
    post,
    reply,
    serving,
)

PROXY_VARS = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy variables, whatever the machine running it has set."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)


class ConnectProxy:
    """A CONNECT-only proxy: records each CONNECT head, then pipes bytes both ways, or refuses
    every tunnel with the answer it was given."""

    def __init__(self, refusal: bytes | None = None) -> None:
        self.refusal = refusal
        self.connects: list[bytes] = []

    async def serve(self, reader: Reader, writer: Writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.connects.append(head)
            if self.refusal is not None:
                writer.write(self.refusal)
                await writer.drain()
                return
            host, _, port = head.split(b"\r\n")[0].split()[1].rpartition(b":")
            up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def pipe(reader: Reader, writer: Writer) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


@contextlib.asynccontextmanager
async def proxying(proxy: ConnectProxy) -> AsyncIterator[int]:
    listener = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the provider's server context, a client context that trusts it) from a test CA."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return server_tls, trusting


async def test_https_providers_are_reached_through_one_pooled_connect_tunnel(
    monkeypatch: pytest.MonkeyPatch, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, trusting = tls_pair
    proxy = ConnectProxy()
    async with (
        proxying(proxy) as proxy_port,
        serving(keep_answering, tls=server_tls) as (server, url),
    ):
        monkeypatch.setenv("HTTPS_PROXY", f"http://team:s%40cret@127.0.0.1:{proxy_port}")
        client = Upstreams(tls=trusting)
        for _ in range(3):
            resp = await post(client, url)
            assert resp.status == 200
            assert await resp.read() == b"{}"
        client.close()

    port = url.split(":")[2].split("/")[0]
    assert len(proxy.connects) == 1
    lines = proxy.connects[0].decode().split("\r\n")
    assert lines[0] == f"CONNECT 127.0.0.1:{port} HTTP/1.1"
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'team:s@cret').decode()}" in lines
    assert server.connections == 1
    assert [r.split(b"\r\n")[0] for r in server.requests] == [
        b"POST /v1/chat/completions HTTP/1.1"
    ] * 3
    assert all(b"Proxy-Authorization" not in r for r in server.requests)


async def test_the_tunnelled_provider_is_still_verified_against_its_own_name(
    monkeypatch: pytest.MonkeyPatch, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, _ = tls_pair
    proxy = ConnectProxy()
    async with proxying(proxy) as proxy_port, serving(keep_answering, tls=server_tls) as (_, url):
        monkeypatch.setenv("https_proxy", f"127.0.0.1:{proxy_port}")
        with pytest.raises(ConnectFailed, match=r"through the proxy 127\.0\.0\.1"):
            await post(Upstreams(tls=ssl.create_default_context()), url)
    assert len(proxy.connects) == 1


async def test_http_providers_get_absolute_form_requests_sent_to_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(keep_answering) as (proxy, proxy_url):
        proxy_port = proxy_url.split(":")[2].split("/")[0]
        monkeypatch.setenv("HTTP_PROXY", f"http://team:pw@127.0.0.1:{proxy_port}")
        client = Upstreams()
        url = "http://models.example:8080/v1/chat/completions?api-version=1"
        for _ in range(2):
            assert await (await post(client, url)).read() == b"{}"
        client.close()

    assert proxy.connections == 1
    lines = proxy.requests[0].split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0] == "POST http://models.example:8080/v1/chat/completions?api-version=1 HTTP/1.1"
    assert "Host: models.example:8080" in lines
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'team:pw').decode()}" in lines


async def test_no_proxy_hosts_go_direct_and_the_proxy_sees_nothing(
    monkeypatch: pytest.MonkeyPatch, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, trusting = tls_pair
    proxy = ConnectProxy()
    async with (
        proxying(proxy) as proxy_port,
        serving(keep_answering) as (plain, plain_url),
        serving(keep_answering, tls=server_tls) as (secure, secure_url),
    ):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.svc")
        client = Upstreams(tls=trusting)
        assert await (await post(client, plain_url)).read() == b"{}"
        assert await (await post(client, secure_url)).read() == b"{}"
        client.close()

    assert proxy.connects == []
    assert plain.connections == secure.connections == 1
    assert plain.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1")


async def test_a_no_proxy_cidr_range_sends_its_addresses_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = ConnectProxy()
    async with proxying(proxy) as proxy_port, serving(keep_answering) as (plain, plain_url):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,127.0.0.0/8")
        client = Upstreams()
        assert await (await post(client, plain_url)).read() == b"{}"
        client.close()

    assert proxy.connects == []
    assert plain.connections == 1


@pytest.mark.parametrize(
    "refusal",
    [
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    ],
)
async def test_a_proxy_that_refuses_the_tunnel_is_a_connection_error_naming_no_secret(
    monkeypatch: pytest.MonkeyPatch, refusal: bytes
) -> None:
    proxy = ConnectProxy(refusal=refusal)
    async with proxying(proxy) as proxy_port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://team:hunter2@127.0.0.1:{proxy_port}")
        with pytest.raises(ConnectFailed) as info:
            await post(Upstreams(), "https://api.example.com/v1/chat/completions")

    message = str(info.value)
    assert refusal.split(b"\r\n")[0].decode() in message
    assert "api.example.com:443" in message
    assert "hunter2" not in message and "team" not in message
    assert errors.classify_exception(info.value).trigger == errors.CONNECTION_ERROR
    assert len(proxy.connects) == 1


async def test_a_proxy_that_cannot_be_reached_is_a_connection_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with proxying(ConnectProxy()) as proxy_port:
        pass  # the port is free again: nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    with pytest.raises(ConnectFailed, match="through the proxy"):
        await post(Upstreams(), "https://api.example.com/v1/chat/completions")


def test_proxies_other_than_http_are_ignored_with_a_warning_that_hides_the_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://team:hunter2@proxy.internal:1080")
    assert EgressProxies().for_host("https", "api.openai.com") is None
    assert "only http://" in caplog.text
    assert "hunter2" not in caplog.text


async def test_rotated_proxy_credentials_reach_new_tunnels_and_forwarded_requests(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def answer_and_close(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Length: 2", "Connection: close"], b"{}"))
        await writer.drain()

    server_tls, trusting = tls_pair
    connect_proxy = ConnectProxy()
    monkeypatch.setattr(egress_proxy, "CREDENTIALS_RECHECK_S", 0.0)
    monkeypatch.setenv("LANEWAY_EGRESS_PROXY_CREDENTIALS", str(tmp_path))
    async with (
        proxying(connect_proxy) as proxy_port,
        serving(answer_and_close, tls=server_tls) as (_, secure_url),
        serving(keep_answering) as (forward_proxy, forward_url),
    ):
        forward_port = forward_url.split(":")[2].split("/")[0]
        monkeypatch.setenv("LANEWAY_EGRESS_HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("LANEWAY_EGRESS_HTTP_PROXY", f"http://127.0.0.1:{forward_port}")
        client = Upstreams(tls=trusting)
        for password in ("first", "second"):
            (tmp_path / "username").write_text("team")
            (tmp_path / "password").write_text(password)
            assert await (await post(client, secure_url)).read() == b"{}"
            plain = "http://models.example/v1/chat/completions"
            assert await (await post(client, plain)).read() == b"{}"
        client.close()

    expected = [
        f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}"
        for pair in (b"team:first", b"team:second")
    ]
    tunnels = [head.decode().split("\r\n") for head in connect_proxy.connects]
    assert [expected[i] in lines for i, lines in enumerate(tunnels)] == [True, True]
    forwarded = [r.split(b"\r\n\r\n")[0].decode().split("\r\n") for r in forward_proxy.requests]
    assert forward_proxy.connections == 1  # one kept-alive connection, new credentials per request
    assert [expected[i] in lines for i, lines in enumerate(forwarded)] == [True, True]
