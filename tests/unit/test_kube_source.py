"""The sidecar following its ConfigMap: list, watch, resume, re-list, and ride out failures.

A small fake API server stands in for Kubernetes here so that every failure can be staged; the
real API server path is covered by tests/integration/test_config_delivery.py. The last tests run
the file watcher next to it on one store, as `laneway serve --watch-configmap` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from laneway_operator.compiler import compile_policy, render_config
from router_sidecar.kube_source import watch_configmap
from router_sidecar.reload import ConfigStore, watch_file


def config_text(default_route: str, model: str = "m") -> str:
    lane = {
        "apiVersion": "routing.laneway.dev/v1alpha1", "kind": "ModelLane",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {"provider": {"type": "openai", "baseURL": "http://x/v1", "model": model},
                 "pricing": {"inputPerMillion": 1, "outputPerMillion": 1},
                 "limits": {"contextWindow": 1000, "maxOutputTokens": 100}},
    }
    policy = {
        "apiVersion": "routing.laneway.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": "bot", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "bot"}},
                 "routes": [{"name": "fast", "lanes": ["a"]}, {"name": "slow", "lanes": ["a"]}],
                 "defaultRoute": default_route},
    }
    return render_config(compile_policy(policy, {"a": lane}))


def configmap(text: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": "laneway-bot", "resourceVersion": str(rv)},
            "data": {"config.json": text}}


class FakeApi:
    """Serves list and watch of one ConfigMap; tests queue watch events and stage failures."""

    def __init__(self, token_file: Path) -> None:
        self.token_file = token_file
        self.url = ""
        self.object = configmap(config_text("fast"), 10)
        self.forbidden = False
        self.lists: list[dict[str, str]] = []
        self.watches: list[dict[str, str]] = []
        self.tokens: list[str] = []
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.tokens.append(request.headers.get("Authorization", ""))
        if self.forbidden:
            return web.json_response({"message": "configmaps is forbidden"}, status=403)
        assert request.query["fieldSelector"] == "metadata.name=laneway-bot"
        if request.query.get("watch") != "1":
            self.lists.append(dict(request.query))
            return web.json_response({"metadata": {"resourceVersion": "20"},
                                      "items": [self.object]})
        self.watches.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        while (event := await self.events.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        return response  # the server ends the watch, as kube-apiserver does on timeoutSeconds


@pytest.fixture
async def fake_api(tmp_path: Path) -> AsyncIterator[FakeApi]:
    token_file = tmp_path / "token"
    token_file.write_text("token-1\n")
    fake = FakeApi(token_file)
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    fake.events.put_nowait(None)
    await runner.cleanup()


@contextlib.asynccontextmanager
async def running(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def following(fake: FakeApi, store: ConfigStore) -> Coroutine[Any, Any, None]:
    return watch_configmap("ns", "laneway-bot", store, api_url=fake.url,
                           token_file=str(fake.token_file), ca_file=None)


@pytest.fixture
async def api(fake_api: FakeApi) -> AsyncIterator[tuple[FakeApi, ConfigStore]]:
    store = ConfigStore()
    async with running(following(fake_api, store)):
        yield fake_api, store


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_the_listed_configmap_is_served_and_each_modification_replaces_it(api):
    fake, store = api
    await eventually(lambda: store.current is not None and fake.watches)
    assert store.current.default_route == "fast"
    assert fake.watches[0]["resourceVersion"] == "20"
    assert fake.tokens[0] == "Bearer token-1"

    fake.events.put_nowait({"type": "MODIFIED", "object": configmap(config_text("slow"), 21)})

    await eventually(lambda: store.current.default_route == "slow")


async def test_a_watch_that_ends_resumes_from_the_last_version_seen(api):
    fake, _ = api
    await eventually(lambda: fake.watches)
    fake.events.put_nowait({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "35"}}})
    fake.events.put_nowait(None)

    await eventually(lambda: len(fake.watches) == 2)
    assert fake.watches[1]["resourceVersion"] == "35"
    assert len(fake.lists) == 1


async def test_an_expired_version_lists_again(api):
    fake, store = api
    await eventually(lambda: fake.watches)
    fake.object = configmap(config_text("slow"), 40)
    fake.events.put_nowait({"type": "ERROR", "object": {"kind": "Status", "code": 410}})

    await eventually(lambda: len(fake.lists) == 2 and store.current.default_route == "slow")


async def test_a_bad_config_is_refused_and_the_last_good_one_keeps_serving(api):
    fake, store = api
    await eventually(lambda: fake.watches)
    fake.events.put_nowait({"type": "MODIFIED", "object": configmap("{not json", 22)})

    await eventually(lambda: store.stale)
    assert store.current.default_route == "fast"


async def test_a_forbidden_api_keeps_the_config_and_retries_with_a_fresh_token(api, caplog):
    fake, store = api
    await eventually(lambda: fake.watches)
    fake.forbidden = True
    fake.token_file.write_text("token-2\n")
    fake.events.put_nowait(None)  # end the watch; the next connection is refused

    await eventually(lambda: "403" in caplog.text)
    assert "still serving config" in caplog.text
    assert store.current.default_route == "fast"
    fake.forbidden = False

    await eventually(lambda: len(fake.watches) == 2, timeout=10)
    assert fake.tokens[-1] == "Bearer token-2"


async def test_a_missing_kubernetes_environment_disables_the_watch_without_crashing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    await watch_configmap("ns", "laneway-bot", ConfigStore())

    assert "KUBERNETES_SERVICE_HOST is not set" in caplog.text


class Mount:
    """A ConfigMap volume as the kubelet lays it out; `publish` is the kubelet's late sync."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        self.syncs = 0
        self.publish(text)
        (root / "config.json").symlink_to("..data/config.json")
        self.path = str(root / "config.json")

    def publish(self, text: str) -> None:
        self.syncs += 1
        stamp = self.root / f"..sync{self.syncs}"
        stamp.mkdir()
        (stamp / "config.json").write_text(text)
        (self.root / "..data_tmp").symlink_to(stamp.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


def version(text: str) -> str:
    return str(json.loads(text)["version"])


def serving(store: ConfigStore) -> str:
    return store.current.version if store.current is not None else "none"


@pytest.fixture
def abc() -> tuple[str, str, str]:
    """Three valid configs, in the order the operator writes them."""
    return config_text("fast"), config_text("slow"), config_text("fast", model="m2")


async def test_the_late_mounted_file_does_not_step_the_sidecar_back_to_an_older_config(
    fake_api: FakeApi, abc: tuple[str, str, str], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    a, b, c = abc
    mount = Mount(tmp_path, a)
    fake_api.object = configmap(a, 10)
    store = ConfigStore()
    store.apply_text(a, source=mount.path)  # what `laneway serve` starts from
    caplog.set_level(logging.INFO, logger="router_sidecar.reload")

    async with running(watch_file(store, mount.path, interval_s=0.02),
                       following(fake_api, store)):
        await eventually(lambda: fake_api.watches)
        fake_api.events.put_nowait({"type": "MODIFIED", "object": configmap(b, 21)})
        fake_api.events.put_nowait({"type": "MODIFIED", "object": configmap(c, 22)})
        await eventually(lambda: serving(store) == version(c))

        mount.publish(b)  # the kubelet syncs the volume a minute later, to the older B
        await eventually(lambda: "Ignoring" in caplog.text or serving(store) != version(c))
        assert serving(store) == version(c)
        assert not store.stale

        mount.publish(c)  # and catches up
        await asyncio.sleep(0.1)
        assert serving(store) == version(c)
    ignored = [r.getMessage() for r in caplog.records if "Ignoring" in r.getMessage()]
    assert len(ignored) == 1 and "resourceVersion 22" in ignored[0]


async def test_the_file_is_followed_until_the_api_delivers_a_config(
    fake_api: FakeApi, abc: tuple[str, str, str], tmp_path: Path,
):
    a, b, c = abc
    mount = Mount(tmp_path, a)
    fake_api.object = configmap(c, 30)
    fake_api.forbidden = True  # the operator has not bound the pod's ServiceAccount yet
    store = ConfigStore()
    store.apply_text(a, source=mount.path)

    async with running(watch_file(store, mount.path, interval_s=0.02),
                       following(fake_api, store)):
        await eventually(lambda: fake_api.tokens)
        mount.publish(b)
        await eventually(lambda: serving(store) == version(b))

        fake_api.forbidden = False
        await eventually(lambda: serving(store) == version(c), timeout=10)
        mount.publish(a)
        await asyncio.sleep(0.1)
        assert serving(store) == version(c)


async def test_a_broken_config_from_the_api_or_the_file_never_replaces_the_good_one(
    fake_api: FakeApi, abc: tuple[str, str, str], tmp_path: Path,
):
    a, b, c = abc
    mount = Mount(tmp_path, a)
    fake_api.object = configmap("{not json", 10)  # e.g. a newer operator's schema
    store = ConfigStore()
    store.apply_text(a, source=mount.path)

    async with running(watch_file(store, mount.path, interval_s=0.02),
                       following(fake_api, store)):
        await eventually(lambda: fake_api.watches and store.stale)
        assert serving(store) == version(a)
        mount.publish("garbage: [")
        await eventually(lambda: store.last_text == "garbage: [")
        assert serving(store) == version(a)
        mount.publish(b)  # a refused API document does not silence the file
        await eventually(lambda: serving(store) == version(b))

        fake_api.events.put_nowait({"type": "MODIFIED", "object": configmap(c, 11)})
        await eventually(lambda: serving(store) == version(c))
        fake_api.events.put_nowait({"type": "MODIFIED", "object": configmap("{broken", 12)})
        await eventually(lambda: store.stale)
        mount.publish("garbage again: [")
        await asyncio.sleep(0.1)
        assert serving(store) == version(c)
