"""The `/_control` API, request counting, and the in-process and background-thread Python API."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from router_sidecar.simulator import MODES, ControlError, SimulatedProvider, run_in_thread
from tests.unit.test_simulator import CHAT_BODY


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedProvider]:
    async with SimulatedProvider(model="sim-c", latency_ms=5) as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(sim: SimulatedProvider) -> str:
    return sim.url.removesuffix("/v1")


async def control(
    http: aiohttp.ClientSession, sim: SimulatedProvider, body: Any = None
) -> tuple[int, dict[str, Any]]:
    if body is None:
        async with http.get(f"{base(sim)}/_control") as resp:
            return resp.status, await resp.json()
    async with http.post(f"{base(sim)}/_control", json=body) as resp:
        return resp.status, await resp.json()


async def test_get_control_reports_the_mode_settings_and_counts(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    status, state = await control(http, sim)

    assert status == 200
    assert state == {
        "mode": "ok",
        "latency_ms": 5,
        "chunk_delay_ms": 0,
        "answer": None,
        "tool_call": False,
        "context_window": None,
        "requests": 0,
        "models_requests": 0,
        "hanging": 0,
        "model": "sim-c",
        "api": "openai",
    }


async def test_requests_counts_model_calls_only(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        async with http.post(f"{sim.url}/chat/completions", json=CHAT_BODY) as resp:
            assert resp.status == 200
    await control(http, sim, {"mode": "error500"})
    async with http.post(f"{sim.url}/chat/completions", json=CHAT_BODY) as resp:
        assert resp.status == 500
    async with http.get(f"{sim.url}/models") as resp:
        assert resp.status == 500
    async with http.get(f"{base(sim)}/healthz") as resp:
        assert resp.status == 200

    _, state = await control(http, sim)

    assert state["requests"] == 4
    assert state["models_requests"] == 1


async def test_post_control_changes_settings_and_returns_the_new_state(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    body = {"mode": "refuse", "latency_ms": 0, "answer": "x", "tool_call": True}

    status, state = await control(http, sim, body)

    assert status == 200
    assert {k: state[k] for k in body} == body
    assert sim.state == state


async def test_reset_count_zeroes_the_counters_and_keeps_the_mode(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    await control(http, sim, {"mode": "uncertain"})
    async with http.post(f"{sim.url}/chat/completions", json=CHAT_BODY):
        pass

    _, state = await control(http, sim, {"reset_count": True})

    assert state["requests"] == 0
    assert state["mode"] == "uncertain"


async def test_reset_restores_the_start_up_settings(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    await control(http, sim, {"mode": "down", "latency_ms": 900, "answer": "x"})

    _, state = await control(http, sim, {"reset": True})

    assert (state["mode"], state["latency_ms"], state["answer"]) == ("ok", 5, None)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"mode": "sideways"}, "mode must be one of ok, error500"),
        ({"latency_ms": -1}, "latency_ms must be a number of milliseconds >= 0"),
        ({"tool_call": "yes"}, "tool_call must be true or false"),
        ({"context_window": 0}, "context_window must be a positive number"),
        ({"modee": "ok"}, "unknown control key(s) modee"),
        (["ok"], "must be a JSON object"),
    ],
)
async def test_bad_control_bodies_are_rejected_with_a_message_and_change_nothing(
    sim: SimulatedProvider, http: aiohttp.ClientSession, body: Any, needle: str
) -> None:
    status, answer = await control(http, sim, body)

    assert status == 400
    assert needle in answer["error"]
    assert sim.state["mode"] == "ok"


def test_set_mode_rejects_unknown_modes_in_process() -> None:
    provider = SimulatedProvider()

    with pytest.raises(ControlError, match="mode must be one of"):
        provider.set_mode("sideways")
    assert "down" in MODES and "timeout" in MODES


def test_an_unknown_api_is_refused() -> None:
    with pytest.raises(ValueError, match="api must be one of openai, anthropic"):
        SimulatedProvider(api="cohere")


def test_a_background_provider_serves_synchronous_clients() -> None:
    with SimulatedProvider(model="sim-thread") as sim:
        client = openai.OpenAI(base_url=sim.url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(**CHAT_BODY)
        sim.set_mode("ratelimit")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**CHAT_BODY)
        client.close()
        state = sim.state

    assert reply.choices[0].message.content == "[sim-thread] ok: hello there"
    assert state["requests"] == 2
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{sim.url}/models", timeout=1)


def test_run_in_thread_returns_a_started_provider() -> None:
    sim = run_in_thread(model="sim-run", api="anthropic")
    try:
        request = urllib.request.Request(f"{sim.url.removesuffix('/v1')}/_control")
        with urllib.request.urlopen(request, timeout=5) as resp:
            state = json.load(resp)
    finally:
        sim.stop_thread()

    assert (state["model"], state["api"]) == ("sim-run", "anthropic")


def test_a_port_in_use_fails_to_start() -> None:
    with SimulatedProvider() as first, pytest.raises(OSError):
        SimulatedProvider(port=first.port).start_in_thread()
