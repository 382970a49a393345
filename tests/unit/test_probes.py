"""Lane health probes: the phase machine (thresholds, hold-down) and the probe request."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from laneway_operator.probes import (
    LaneHealth,
    ProbeResult,
    ProbeSettings,
    advance,
    describe,
    probe_provider,
    probe_request,
)

SETTINGS = ProbeSettings(interval_s=1, timeout_s=1, failure_threshold=3, success_threshold=2)
HOLD = 30.0


def run(outcomes: str, *, start: LaneHealth | None = None, step: float = 1.0) -> list[str]:
    """Phases after each outcome in `outcomes` ('+' success, '-' failure), one per `step`."""
    health = start or LaneHealth()
    phases = []
    for i, mark in enumerate(outcomes):
        health = advance(health, mark == "+", now=i * step, settings=SETTINGS, hold_down_s=HOLD)
        phases.append(health.phase)
    return phases


def test_a_new_lane_is_unknown_until_probed_then_healthy_on_first_success():
    assert LaneHealth().phase == "Unknown"
    assert run("+") == ["Healthy"]


def test_failures_degrade_a_lane_and_the_threshold_takes_it_down():
    assert run("+---") == ["Healthy", "Degraded", "Degraded", "Down"]


def test_a_success_between_failures_restarts_the_failure_count():
    assert run("+--+--")[-1] == "Degraded"


def test_a_degraded_lane_needs_success_threshold_successes_to_be_healthy_again():
    assert run("+-++") == ["Healthy", "Degraded", "Degraded", "Healthy"]


def test_a_down_lane_stays_down_through_the_hold_down_even_when_probes_pass():
    # 10 s between probes: 2 successes reach the threshold, then 30 s of passing probes.
    phases = run("---" + "+" * 6, step=10)

    assert phases[:3] == ["Degraded", "Degraded", "Down"]
    assert phases[3:7] == ["Down"] * 4  # threshold met at t=40, hold-down until t=70
    assert phases[7:] == ["Healthy", "Healthy"]


def test_a_failure_during_the_hold_down_restarts_recovery():
    phases = run("---" + "++" + "+-" + "+++++", step=10)

    assert phases[6] == "Down"  # the failure at t=60
    assert "Healthy" not in phases[:10]
    assert phases[-1] == "Healthy"  # threshold again at t=80, then 30 s to t=110


def test_zero_hold_down_restores_at_the_success_threshold():
    health = LaneHealth(phase="Down", failures=3)
    for i in range(2):
        health = advance(health, True, now=float(i), settings=SETTINGS, hold_down_s=0)
    assert health.phase == "Healthy"


def test_probe_settings_read_the_lane_spec_and_keep_defaults_for_missing_fields():
    got = ProbeSettings.from_spec({"interval": "500ms", "failureThreshold": 5})

    assert got == ProbeSettings(interval_s=0.5, timeout_s=3.0, failure_threshold=5,
                                success_threshold=2)
    assert ProbeSettings.from_spec(None) == ProbeSettings()


def test_the_hold_down_message_says_when_traffic_returns():
    health = LaneHealth(phase="Down", successes=2, recovering_since=100.0)
    probe = ProbeResult(True, "Succeeded", 3, "GET /models answered 200 in 3 ms")

    reason, message = describe(health, probe, settings=SETTINGS, hold_down_s=HOLD, now=110.0)

    assert reason == "HoldDown"
    assert "30s hold-down" in message and "Z" in message


def test_openai_and_anthropic_probes_carry_their_own_auth_headers():
    url, headers = probe_request({"type": "openai", "baseURL": "http://x/v1/"}, "sk-1")
    assert url == "http://x/v1/models"
    assert headers["Authorization"] == "Bearer sk-1"

    url, headers = probe_request({"type": "anthropic", "baseURL": "http://y"}, "ak-2")
    assert url == "http://y/v1/models"
    assert probe_request({"type": "anthropic", "baseURL": "http://y/v1"}, None)[0] == (
        "http://y/v1/models")
    assert headers["x-api-key"] == "ak-2"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers


@pytest.fixture
async def provider():
    """A provider whose /v1/models answers with the status in `state`, or hangs."""
    state = {"status": 200, "hang": False, "seen_auth": None}

    async def models(request: web.Request) -> web.Response:
        state["seen_auth"] = request.headers.get("Authorization")
        if state["hang"]:
            await asyncio.sleep(1)
        return web.json_response({"data": []}, status=state["status"])

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}/v1", state
    await runner.cleanup()


async def test_a_2xx_answer_is_a_success_with_its_latency(provider):
    session, base, state = provider

    got = await probe_provider(session, {"type": "openai", "baseURL": base}, "sk-x", timeout_s=2)

    assert got.ok and got.result == "Succeeded"
    assert got.latency_ms is not None and got.latency_ms >= 0
    assert state["seen_auth"] == "Bearer sk-x"
    assert "sk-x" not in got.message


@pytest.mark.parametrize(
    ("status", "result"), [(401, "Unauthorized"), (429, "RateLimited"), (503, "HTTPError")]
)
async def test_error_answers_are_failures_named_by_kind(provider, status, result):
    session, base, state = provider
    state["status"] = status

    got = await probe_provider(session, {"type": "openai", "baseURL": base}, None, timeout_s=2)

    assert not got.ok and got.result == result
    assert str(status) in got.message


async def test_a_provider_that_does_not_answer_in_time_is_a_timeout(provider):
    session, base, state = provider
    state["hang"] = True

    got = await probe_provider(session, {"type": "openai", "baseURL": base}, None, timeout_s=0.2)

    assert not got.ok and got.result == "Timeout"


async def test_a_refused_connection_is_a_connection_failure():
    async with aiohttp.ClientSession() as session:
        got = await probe_provider(
            session, {"type": "openai", "baseURL": "http://127.0.0.1:9/v1"}, None, timeout_s=2
        )

    assert not got.ok and got.result == "ConnectionFailed"
