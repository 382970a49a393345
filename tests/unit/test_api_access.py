"""Who may call the sidecar: `/v1/*` serves only the pod itself unless --allow-remote-api;
probes and /metrics answer anyone (the kubelet and Prometheus come from outside the pod)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from laneway.cli import build_parser
from router_sidecar.server import build_app, is_loopback
from tests.e2e.harness import lane, policy_doc, start_sims, stop_sims, store_for


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("192.168.1.20", False),
        ("::ffff:10.0.0.7", False),
        ("fe80::1", False),
        ("1270.0.0.1", False),
        ("", False),
        (None, False),
    ],
)
def test_only_loopback_peers_count_as_the_pod_itself(remote: str | None, local: bool) -> None:
    assert is_loopback(remote) is local


def _pod_address() -> str:
    """This host's address on its default route (no packet is sent: UDP connect only picks
    the source address), or 127.0.0.1 when there is none."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@pytest.fixture
async def pod_ip_sidecar(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The sidecar listening on the pod's (non-loopback) address, like `--host 0.0.0.0`."""
    address = _pod_address()
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    sims = await start_sims(("a", "openai"))
    store = store_for(policy_doc({"a": lane(sims["a"].url)}, {"main": ["a"]}))
    app = build_app(store, allow_remote_api=request.param)
    try:
        addresses = await app.serve(address, 0)
        yield f"http://{address}:{addresses[0][1]}"
    finally:
        await app.close(grace_s=5)
        await stop_sims(sims)


@pytest.mark.parametrize("pod_ip_sidecar", [False], indirect=True)
async def test_other_pods_get_403_from_the_api_but_reach_probes_and_metrics(
    pod_ip_sidecar: str,
) -> None:
    chat = {"model": "auto", "messages": [{"role": "user", "content": "spend your keys"}]}
    async with aiohttp.ClientSession() as session:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                             ("POST", "/v1/route/explain"), ("POST", "/v1/feedback")):
            async with session.request(method, pod_ip_sidecar + path, json=chat) as resp:
                body = await resp.json()
                assert resp.status == 403, (path, body)
                assert body["error"]["code"] == "permission_denied"
                assert "--allow-remote-api" in body["error"]["message"]
                assert resp.headers["x-laneway-decision-id"]
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(pod_ip_sidecar + path) as resp:
                assert resp.status == 200, path
        async with session.get(pod_ip_sidecar + "/metrics") as resp:
            assert "laneway_requests_total{" not in await resp.text()  # nothing was served


@pytest.mark.parametrize("pod_ip_sidecar", [True], indirect=True)
async def test_allow_remote_api_serves_other_pods(pod_ip_sidecar: str) -> None:
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    url = pod_ip_sidecar + "/v1/chat/completions"
    async with aiohttp.ClientSession() as session, session.post(url, json=chat) as resp:
        assert resp.status == 200
        assert resp.headers["x-laneway-lane"] == "a"


def test_serve_takes_allow_remote_api_and_defaults_to_loopback_only() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--config", "c.json"]).allow_remote_api is False
    args = parser.parse_args(["serve", "--config", "c.json", "--allow-remote-api"])
    assert args.allow_remote_api is True
