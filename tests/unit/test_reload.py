"""Config reload: only valid documents replace the served config, files are followed through
edits, atomic renames and ConfigMap symlink swaps, and traffic never notices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from router_sidecar.config import RouterConfig
from router_sidecar.reload import ConfigStore, watch_file
from router_sidecar.secrets import SecretStore
from tests.e2e.harness import Sidecar, lane, policy_doc, running, text


def _doc(url: str, name: str = "a", mode: str = "enforce") -> dict[str, Any]:
    return policy_doc({name: lane(url)}, {"main": [name]}, mode=mode)


def test_a_valid_document_replaces_the_config_and_listeners_hear_of_it() -> None:
    store = ConfigStore()
    seen: list[RouterConfig] = []
    store.subscribe(applied=seen.append)
    doc = _doc("http://127.0.0.1:9/v1")
    assert store.apply_text(text(doc), source="test")
    assert store.current is not None and store.current.version == doc["version"]
    assert seen == [store.current]
    assert not store.stale


def test_a_broken_document_keeps_the_last_good_config_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ConfigStore()
    rejected: list[tuple[str, str]] = []
    store.subscribe(rejected=lambda source, error: rejected.append((source, error)))
    good = _doc("http://127.0.0.1:9/v1")
    store.apply_text(text(good), source="cm")
    caplog.set_level(logging.WARNING)

    tampered = dict(good, mode="observe")  # content changed, version not recomputed
    assert not store.apply_text(text(tampered), source="cm")
    assert not store.apply_text("{not yaml: [", source="cm")
    assert store.current is not None and store.current.version == good["version"]
    assert store.stale
    assert len(rejected) == 2 and "version" in rejected[0][1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(good["version"] in r.getMessage() for r in warnings)

    assert store.apply_text(text(good), source="cm")
    assert not store.stale


def _three_versions() -> tuple[str, str, str]:
    """A, B, C: three valid documents, in the order the operator wrote them."""
    return (text(_doc("http://127.0.0.1:9/v1", "a")), text(_doc("http://127.0.0.1:9/v1", "b")),
            text(_doc("http://127.0.0.1:9/v1", "c")))


def _version(document: str) -> str:
    return str(json.loads(document)["version"])


def test_after_the_authoritative_source_delivered_an_older_file_is_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, c = _three_versions()
    store = ConfigStore()
    rejected: list[tuple[str, str]] = []
    applied: list[RouterConfig] = []
    store.subscribe(applied=applied.append, rejected=lambda s, e: rejected.append((s, e)))
    store.apply_text(a, source="/etc/laneway/config.json")
    assert store.apply_text(b, source="ConfigMap ns/cm (resourceVersion 21)", authoritative=True)
    assert store.apply_text(c, source="ConfigMap ns/cm (resourceVersion 22)", authoritative=True)
    caplog.set_level(logging.INFO, logger="router_sidecar.reload")

    assert not store.apply_text(b, source="/etc/laneway/config.json")  # the kubelet, late

    assert store.current is not None and store.current.version == _version(c)
    assert not store.stale and rejected == [] and len(applied) == 3
    [line] = [r for r in caplog.records if "Ignoring" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "/etc/laneway/config.json" in line.getMessage()
    assert "resourceVersion 22" in line.getMessage() and _version(c) in line.getMessage()

    # The file catching up to what is served is no change at all: no line, no listener call.
    assert store.apply_text(c, source="/etc/laneway/config.json")
    assert len([r for r in caplog.records if "Ignoring" in r.getMessage()]) == 1
    assert len(applied) == 3


def test_before_the_authoritative_source_delivered_the_file_is_applied() -> None:
    a, b, _ = _three_versions()
    store = ConfigStore()
    store.apply_text(a, source="file")
    assert store.apply_text(b, source="file")
    assert store.current is not None and store.current.version == _version(b)
    assert store.authority is None


def test_a_refused_authoritative_document_leaves_the_file_in_charge() -> None:
    a, b, _ = _three_versions()
    store = ConfigStore()
    store.apply_text(a, source="file")
    assert not store.apply_text("{not json", source="cm", authoritative=True)
    assert store.stale and store.authority is None

    assert store.apply_text(b, source="file")
    assert store.current is not None and store.current.version == _version(b)
    assert not store.stale


def test_a_broken_document_from_either_source_never_replaces_the_served_one() -> None:
    a, _, c = _three_versions()
    store = ConfigStore()
    store.apply_text(a, source="file")
    assert not store.apply_text("garbage: [", source="file")  # before the API delivered
    assert store.current is not None and store.current.version == _version(a)
    store.apply_text(c, source="cm", authoritative=True)

    assert not store.apply_text("{not json", source="cm", authoritative=True)
    assert store.stale
    assert not store.apply_text("garbage: [", source="file")
    assert store.current.version == _version(c)


def test_applying_the_served_document_again_changes_nothing() -> None:
    a, _, _ = _three_versions()
    store = ConfigStore()
    applied: list[RouterConfig] = []
    store.subscribe(applied=applied.append)
    store.apply_text(a, source="file")
    assert store.apply_text(a, source="cm", authoritative=True)
    assert applied == [store.current]
    assert store.authority == "cm"


async def test_reload_metrics_and_readiness_show_a_rejected_config() -> None:
    async with running({"a": "openai"}, lambda s: _doc(s["a"].url)) as (sidecar, sims):
        old = sidecar.store.current
        assert old is not None
        assert await sidecar.metric("laneway_config_info", version=old.version) == 1
        assert not sidecar.store.apply_text('{"apiVersion": "nope"}', source="test")
        assert await sidecar.metric("laneway_config_reload_failures_total") == 1
        assert await sidecar.metric("laneway_config_stale") == 1
        status, body = await sidecar.get("/readyz")
        assert status == 200
        ready = json.loads(body)
        assert (ready["configVersion"], ready["stale"]) == (old.version, True)
        assert (await sidecar.chat("still served?"))[0] == 200

        new = _doc(sims["a"].url, mode="observe")
        assert sidecar.store.apply_text(text(new), source="test")
        assert await sidecar.metric("laneway_config_stale") == 0
        assert await sidecar.metric("laneway_config_info", version=new["version"]) == 1
        assert await sidecar.metric("laneway_config_info", version=old.version) == 0


@contextlib.asynccontextmanager
async def _watching(store: ConfigStore, path: Path) -> Any:
    task = asyncio.create_task(watch_file(store, str(path), interval_s=0.02))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(predicate: Any, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_the_file_watcher_follows_atomic_renames(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    first, second = _doc("http://127.0.0.1:9/v1"), _doc("http://127.0.0.1:9/v1", "b")
    path.write_text(text(first))
    store = ConfigStore()
    store.apply_text(path.read_text(), str(path))
    async with _watching(store, path):
        tmp = tmp_path / ".config.json.tmp"
        tmp.write_text(text(second))
        os.replace(tmp, path)
        await _until(lambda: store.current.version == second["version"])  # type: ignore[union-attr]

        path.write_text("garbage: [")  # an edit in place that breaks it
        await _until(lambda: store.stale)
        assert store.current.version == second["version"]  # type: ignore[union-attr]


async def test_the_file_watcher_follows_a_configmap_symlink_swap(tmp_path: Path) -> None:
    # The kubelet's layout: config.json -> ..data/config.json, ..data -> ..<timestamp>/
    first, second = _doc("http://127.0.0.1:9/v1"), _doc("http://127.0.0.1:9/v1", "b")
    for stamp, doc in (("..v1", first), ("..v2", second)):
        (tmp_path / stamp).mkdir()
        (tmp_path / stamp / "config.json").write_text(text(doc))
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "config.json").symlink_to("..data/config.json")
    path = tmp_path / "config.json"

    store = ConfigStore()
    store.apply_text(path.read_text(), str(path))
    async with _watching(store, path):
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await _until(lambda: store.current.version == second["version"])  # type: ignore[union-attr]


async def test_a_deleted_config_file_keeps_the_last_config_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    doc = _doc("http://127.0.0.1:9/v1")
    path.write_text(text(doc))
    store = ConfigStore()
    store.apply_text(path.read_text(), str(path))
    caplog.set_level(logging.WARNING)
    async with _watching(store, path):
        path.unlink()
        await _until(lambda: any("gone" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.1)
    assert store.current is not None and store.current.version == doc["version"]
    assert len([r for r in caplog.records if "gone" in r.getMessage()]) == 1


async def test_reloading_under_load_fails_no_request() -> None:
    sims_spec = {"a": "openai", "b": "openai"}
    async with running(sims_spec, lambda s: _doc(s["a"].url)) as (sidecar, sims):
        sims["a"].set_mode("ok", latency_ms=15)
        sims["b"].set_mode("ok", latency_ms=15)
        docs = [_doc(sims["a"].url, "a"), _doc(sims["b"].url, "b")]
        stop = asyncio.Event()
        results: list[tuple[int, str]] = []

        async def client(i: int) -> None:
            while not stop.is_set():
                status, headers, _ = await sidecar.chat(f"worker {i}")
                results.append((status, headers["x-laneway-lane"]))

        workers = [asyncio.create_task(client(i)) for i in range(6)]
        reloads = 0
        while reloads < 20 or len(results) < 60:
            assert sidecar.store.apply_text(text(docs[reloads % 2]), source="test")
            reloads += 1
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*workers)

    assert {status for status, _ in results} == {200}
    assert {lane for _, lane in results} == {"a", "b"}


async def test_an_in_flight_request_finishes_on_the_config_it_started_with() -> None:
    sims_spec = {"a": "openai", "b": "openai"}
    async with running(sims_spec, lambda s: _doc(s["a"].url)) as (sidecar, sims):
        sims["a"].set_mode("ok", latency_ms=300)
        pending = asyncio.create_task(sidecar.chat("slow one"))
        await asyncio.sleep(0.1)
        sidecar.store.apply_text(text(_doc(sims["b"].url, "b")), source="test")
        status, headers, _ = await pending
        assert (status, headers["x-laneway-lane"]) == (200, "a")
        assert (await sidecar.chat("next"))[1]["x-laneway-lane"] == "b"


def test_secret_files_are_reread_so_rotated_keys_are_used(tmp_path: Path) -> None:
    (tmp_path / "prov").mkdir()
    key_file = tmp_path / "prov" / "apiKey"
    key_file.write_text("key-one\n")
    doc = policy_doc(
        {"a": lane("http://127.0.0.1:9/v1", secret=("prov", "apiKey"))}, {"main": ["a"]}
    )
    secrets = SecretStore(str(tmp_path))
    store = ConfigStore(secrets)
    store.apply_text(text(doc), "test")
    assert secrets.key_for("a") == "key-one"
    key_file.write_text("key-two")
    store.refresh_secrets()
    assert secrets.key_for("a") == "key-two"


async def test_a_sidecar_started_without_config_becomes_ready_when_one_arrives() -> None:
    store = ConfigStore()
    async with Sidecar(store) as sidecar:
        assert (await sidecar.get("/readyz"))[0] == 503
        store.apply_text(text(_doc("http://127.0.0.1:9/v1")), "test")
        assert (await sidecar.get("/readyz"))[0] == 200
