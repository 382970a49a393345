"""Shared set-up for the sidecar tests: simulated providers, router configs, an in-process sidecar.

`policy_doc(...)` builds a router config document whose lanes point at simulated providers, in
the shape `laneway compile` writes; `Sidecar` runs `router_sidecar.server.build_app` on a free
loopback port the way `laneway serve` does (handler cancellation on). Used by `tests/e2e` and by
the sidecar's unit tests in `tests/unit/test_engine*.py`, `test_server*.py`, `test_reload.py`.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import aiohttp

from router_sidecar.config import canonical_json, content_version
from router_sidecar.reload import ConfigStore
from router_sidecar.secrets import SecretStore
from router_sidecar.server import build_app
from router_sidecar.simulator import SimulatedProvider


def lane(
    url: str,
    *,
    api: str = "openai",
    model: str = "sim",
    inp: float = 1.0,
    out: float = 2.0,
    context: int = 128_000,
    max_out: int = 4_000,
    caps: Iterable[str] = ("tools", "jsonSchema", "streaming"),
    connect_ms: int = 1_000,
    first_token_ms: int = 3_000,
    total_ms: int = 5_000,
    secret: tuple[str, str] | None = None,
) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": api, "baseURL": url, "model": model}
    if secret is not None:
        provider["apiKeySecretRef"] = {"name": secret[0], "key": secret[1]}
    return {
        "provider": provider,
        "pricing": {"inputPerMillion": inp, "outputPerMillion": out},
        "limits": {"contextWindow": context, "maxOutputTokens": max_out},
        "capabilities": list(caps),
        "timeouts": {"connectMs": connect_ms, "firstTokenMs": first_token_ms, "totalMs": total_ms},
        "phase": "Healthy",
    }


def policy_doc(
    lanes: Mapping[str, dict[str, Any]],
    routes: Mapping[str, list[str]],
    *,
    default_route: str | None = None,
    mode: str = "enforce",
    triage: list[dict[str, Any]] | None = None,
    escalation: dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    latency_budget_ms: int | None = None,
    name: str = "test-policy",
) -> dict[str, Any]:
    """A versioned router config document (see `router_sidecar.config`)."""
    doc: dict[str, Any] = {
        "apiVersion": "router.laneway.dev/v1",
        "kind": "RouterConfig",
        "policy": {"name": name, "namespace": "team-a"},
        "mode": mode,
        "defaultRoute": default_route or next(iter(routes)),
        "latencyBudgetMs": latency_budget_ms,
        "budget": budget or {"maxCostPerRequest": None, "onExceed": "skipLane"},
        "lanes": copy.deepcopy(dict(lanes)),
        "routes": [{"name": r, "lanes": list(ls)} for r, ls in routes.items()],
        "triage": triage or [],
        "complexity": {"base": 1, "signals": [], "bands": []},
        "escalation": escalation
        or {
            "triggers": [],
            "uncertaintyMarkers": [],
            "maxEscalations": 1,
            "toolFailureThreshold": 0,
            "path": {},
        },
        "fallback": fallback
        or {
            "triggers": ["rateLimited", "timeout", "serverError", "connectionError",
                         "contextOverflow"],
            "retries": {"max": 0, "backoffMs": 10},
            "retryBudgetPercent": 20,
            "circuitBreaker": {"consecutiveFailures": 100, "cooldownMs": 1_000},
        },
    }
    return versioned(doc)


def versioned(doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in doc.items() if k != "version"}
    doc["version"] = content_version(doc)
    return doc


def text(doc: Mapping[str, Any]) -> str:
    return canonical_json(doc)


def store_for(doc: Mapping[str, Any], secrets_dir: str | None = None) -> ConfigStore:
    store = ConfigStore(SecretStore(secrets_dir) if secrets_dir else None)
    assert store.apply_text(text(doc), source="test"), store.last_error
    return store


class Sidecar:
    """The sidecar app on a free loopback port, in the test's event loop."""

    def __init__(self, store: ConfigStore, max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.store = store
        self.app = build_app(store, max_body_bytes=max_body_bytes)
        self.url = ""
        self.session: aiohttp.ClientSession | None = None

    @property
    def engine(self) -> Any:
        return self.app.state.engine

    async def start(self) -> Sidecar:
        addresses = await self.app.serve("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{addresses[0][1]}"
        self.session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.app.close(grace_s=5)

    async def __aenter__(self) -> Sidecar:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def chat(
        self,
        content: str | None = "hello",
        *,
        model: str = "auto",
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> tuple[int, dict[str, str], Any]:
        """POST a chat completion; (status, headers, parsed JSON body)."""
        payload = dict(body) if body is not None else {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            **extra,
        }
        return await self.post("/v1/chat/completions", payload, headers=headers)

    async def post(
        self, path: str, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        assert self.session is not None
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.post(self.url + path, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None

    async def get(self, path: str) -> tuple[int, str]:
        assert self.session is not None
        async with self.session.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        _, body = await self.get("/metrics")
        return metric_value(body, name, **labels)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@contextlib.asynccontextmanager
async def running(
    sims: Mapping[str, str],
    build: Callable[[dict[str, SimulatedProvider]], dict[str, Any]],
    *,
    secrets_dir: str | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
    api_keys: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[Sidecar, dict[str, SimulatedProvider]]]:
    """Simulated providers (name -> api; `api_keys` name -> key they require) and a sidecar
    whose config `build(sims)` returns."""
    started = await start_sims(*sims.items(), api_keys=api_keys)
    try:
        store = store_for(build(started), secrets_dir)
        async with Sidecar(store, max_body_bytes=max_body_bytes) as sidecar:
            yield sidecar, started
    finally:
        await stop_sims(started)


async def start_sims(
    *specs: tuple[str, str], api_keys: Mapping[str, str] | None = None
) -> dict[str, SimulatedProvider]:
    """Start one simulated provider per (name, api) on the running loop."""
    sims = {}
    for name, api in specs:
        sim = SimulatedProvider(model=name, api=api, api_key=(api_keys or {}).get(name))
        await sim.start()
        sims[name] = sim
    return sims


async def stop_sims(sims: Mapping[str, SimulatedProvider]) -> None:
    for sim in sims.values():
        await sim.stop()
