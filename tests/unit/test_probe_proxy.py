"""The operator's health probes behind an egress proxy: they take the path the sidecar's requests
take (a CONNECT tunnel for https providers, absolute-form requests for http ones, `NO_PROXY`
hosts and ranges direct), against small servers on loopback."""

from __future__ import annotations

import base64
import ssl

import aiohttp

from laneway_operator.probes import probe_provider
from router_sidecar.egress_proxy import EgressProxies
from tests.unit.test_upstream import keep_answering, serving
from tests.unit.test_upstream_proxy import ConnectProxy, proxying, tls_pair

__all__ = ["tls_pair"]  # a fixture, used by name


def _base(url: str) -> str:
    return url.removesuffix("/chat/completions")


async def test_an_https_provider_is_probed_through_a_connect_tunnel(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_tls, trusting = tls_pair
    proxy = ConnectProxy()
    async with (
        proxying(proxy) as proxy_port,
        serving(keep_answering, tls=server_tls) as (provider, url),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session,
    ):
        proxies = EgressProxies({"https": f"http://team:s%40cret@127.0.0.1:{proxy_port}"})
        got = await probe_provider(
            session, {"type": "openai", "baseURL": _base(url)}, "sk-probe", timeout_s=5,
            proxies=proxies,
        )

    assert got.ok, got.message
    assert len(proxy.connects) == 1
    lines = proxy.connects[0].decode().split("\r\n")
    assert lines[0].startswith("CONNECT 127.0.0.1:")
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'team:s@cret').decode()}" in lines
    assert "sk-probe" not in proxy.connects[0].decode()
    head = provider.requests[0].decode()
    assert head.startswith("GET /v1/models HTTP/1.1")
    assert "Authorization: Bearer sk-probe" in head and "Proxy-Authorization" not in head


async def test_an_http_provider_is_probed_with_an_absolute_form_request_to_the_proxy() -> None:
    async with (
        serving(keep_answering) as (proxy, proxy_url),
        aiohttp.ClientSession() as session,
    ):
        proxies = EgressProxies({"http": _base(proxy_url).removesuffix("/v1")})
        got = await probe_provider(
            session, {"type": "openai", "baseURL": "http://models.example:8080/v1"}, None,
            timeout_s=5, proxies=proxies,
        )

    assert got.ok, got.message
    assert proxy.requests[0].startswith(b"GET http://models.example:8080/v1/models HTTP/1.1")


async def test_no_proxy_ranges_and_names_send_the_probe_direct() -> None:
    proxy = ConnectProxy()
    async with (
        proxying(proxy) as proxy_port,
        serving(keep_answering) as (provider, url),
        aiohttp.ClientSession() as session,
    ):
        proxies = EgressProxies(
            {"http": f"http://127.0.0.1:{proxy_port}", "no": ".svc,127.0.0.0/8"}
        )
        got = await probe_provider(
            session, {"type": "openai", "baseURL": _base(url)}, None, timeout_s=5,
            proxies=proxies,
        )

    assert got.ok, got.message
    assert proxy.connects == []
    assert provider.requests[0].startswith(b"GET /v1/models HTTP/1.1")


async def test_a_proxy_that_refuses_the_tunnel_is_a_failed_probe_naming_no_secret() -> None:
    proxy = ConnectProxy(refusal=b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b"Content-Length: 0\r\n\r\n")
    async with proxying(proxy) as proxy_port, aiohttp.ClientSession() as session:
        proxies = EgressProxies({"https": f"http://team:hunter2@127.0.0.1:{proxy_port}"})
        got = await probe_provider(
            session, {"type": "openai", "baseURL": "https://api.example.com/v1"}, "sk-x",
            timeout_s=5, proxies=proxies,
        )

    assert not got.ok and got.result == "ConnectionFailed"
    assert "hunter2" not in got.message and "sk-x" not in got.message
    assert len(proxy.connects) == 1
