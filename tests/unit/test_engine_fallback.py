"""Fallback between the lanes of one route: triggers, retries, retry budget, circuit breaking.

Every test runs the real sidecar on a loopback port in front of simulated providers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.e2e.harness import lane, policy_doc, running, versioned

ALL_TRIGGERS = ["rateLimited", "timeout", "serverError", "connectionError", "contextOverflow"]


def _fallback(
    triggers: list[str] | None = None,
    retries: int = 0,
    budget_percent: float = 20,
    breaker: int = 100,
    cooldown_ms: int = 1_000,
) -> dict[str, Any]:
    return {
        "triggers": triggers if triggers is not None else ALL_TRIGGERS,
        "retries": {"max": retries, "backoffMs": 5},
        "retryBudgetPercent": budget_percent,
        "circuitBreaker": {"consecutiveFailures": breaker, "cooldownMs": cooldown_ms},
    }


def _two_lanes(**fallback: Any) -> Any:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "a": lane(sims["a"].url, context=100_000, total_ms=400),
                "b": lane(sims["b"].url, context=200_000, total_ms=2_000),
            },
            {"main": ["a", "b"]},
            fallback=_fallback(**fallback),
        )

    return build


TWO = {"a": "openai", "b": "openai"}


@pytest.mark.parametrize(
    ("mode", "trigger"),
    [
        ("ratelimit", "rateLimited"),
        ("error500", "serverError"),
        ("overloaded", "serverError"),
        ("timeout", "timeout"),
        ("down", "connectionError"),
        ("context_overflow", "contextOverflow"),
    ],
)
async def test_each_fallback_trigger_moves_the_request_to_the_backup_lane(
    mode: str, trigger: str
) -> None:
    async with running(TWO, _two_lanes()) as (sidecar, sims):
        sims["a"].set_mode(mode)
        status, headers, body = await sidecar.chat("What are your opening hours?")
        assert status == 200, body
        assert body["choices"][0]["message"]["content"].startswith("[b] ok")
        assert headers["x-laneway-lane"] == "b"
        assert headers["x-laneway-fallbacks"] == "1"
        assert await sidecar.metric(
            "laneway_fallbacks_total", from_lane="a", to_lane="b", reason=trigger
        ) == 1


async def test_context_overflow_skips_backups_whose_window_is_no_larger() -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "a": lane(sims["a"].url, context=100_000),
                "b": lane(sims["b"].url, context=100_000),
                "c": lane(sims["c"].url, context=400_000),
            },
            {"main": ["a", "b", "c"]},
            fallback=_fallback(),
        )

    async with running({"a": "openai", "b": "openai", "c": "openai"}, build) as (sidecar, sims):
        sims["a"].set_mode("context_overflow")
        status, headers, _ = await sidecar.chat("a long document ...")
        assert status == 200 and headers["x-laneway-lane"] == "c"
        assert sims["b"].state["requests"] == 0


async def test_a_failure_that_is_not_a_listed_trigger_is_returned_instead_of_falling_back() -> None:
    async with running(TWO, _two_lanes(triggers=["rateLimited"])) as (sidecar, sims):
        sims["a"].set_mode("error500")
        status, headers, body = await sidecar.chat("hello")
        assert status == 502
        assert "a: serverError" in body["error"]["message"]
        assert headers["x-laneway-route"] == "main"
        assert sims["b"].state["requests"] == 0


async def test_a_provider_400_is_passed_to_the_client_in_openai_shape_without_fallback() -> None:
    async with running(TWO, _two_lanes()) as (sidecar, sims):
        status, headers, body = await sidecar.chat("hello", max_tokens=0)
        assert status == 400
        assert body["error"]["param"] == "max_tokens"
        assert "max_tokens" in body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert headers["x-laneway-decision-id"]
        assert sims["b"].state["requests"] == 0


async def test_a_rate_limited_lane_is_skipped_until_its_retry_after_has_passed() -> None:
    async with running(TWO, _two_lanes()) as (sidecar, sims):
        sims["a"].set_mode("ratelimit")  # the simulator sends Retry-After: 1
        assert (await sidecar.chat("one"))[1]["x-laneway-lane"] == "b"
        sims["a"].set_mode("ok")
        _, headers, _ = await sidecar.chat("two")
        assert headers["x-laneway-lane"] == "b"
        assert sims["a"].state["requests"] == 1
        await asyncio.sleep(1.1)
        assert (await sidecar.chat("three"))[1]["x-laneway-lane"] == "a"


async def test_server_errors_are_retried_on_the_same_lane_before_falling_back() -> None:
    async with running(TWO, _two_lanes(retries=2)) as (sidecar, sims):
        sims["a"].set_mode("error500")
        status, headers, _ = await sidecar.chat("hello")
        assert status == 200 and headers["x-laneway-lane"] == "b"
        assert sims["a"].state["requests"] == 3
        assert await sidecar.metric("laneway_retries_total", lane="a") == 2


async def test_timeouts_and_rate_limits_move_on_without_retrying() -> None:
    async with running(TWO, _two_lanes(retries=2)) as (sidecar, sims):
        sims["a"].set_mode("ratelimit")
        await sidecar.chat("hello")
        assert sims["a"].state["requests"] == 1
        assert await sidecar.metric("laneway_retries_total") == 0


async def test_the_retry_budget_caps_retries_during_an_outage() -> None:
    async with running(TWO, _two_lanes(retries=2, budget_percent=10)) as (sidecar, sims):
        sims["a"].set_mode("error500")
        results = [await sidecar.chat(f"q{i}") for i in range(40)]
        assert all(status == 200 for status, _, _ in results)
        retries = await sidecar.metric("laneway_retries_total", lane="a")
        # A floor of 3 plus 10 % of 40 requests, instead of 2 retries for each of 40.
        assert retries <= 3 + 4
        assert await sidecar.metric("laneway_retry_budget_exhausted_total", lane="a") > 0
        assert sims["a"].state["requests"] == 40 + retries


async def test_the_circuit_opens_after_consecutive_failures_and_a_probe_closes_it() -> None:
    async with running(TWO, _two_lanes(breaker=2, cooldown_ms=300)) as (sidecar, sims):
        sims["a"].set_mode("down")
        for _ in range(2):
            assert (await sidecar.chat("hi"))[1]["x-laneway-lane"] == "b"
        assert await sidecar.metric("laneway_lane_state", lane="a", state="open") == 1

        # Open: the lane is not even called.
        before = sims["a"].state["requests"]
        assert (await sidecar.chat("hi"))[1]["x-laneway-lane"] == "b"
        assert sims["a"].state["requests"] == before

        # After the cooldown one probe goes through; it succeeds and closes the circuit.
        sims["a"].set_mode("ok")
        await asyncio.sleep(0.35)
        assert await sidecar.metric("laneway_lane_state", lane="a", state="halfOpen") == 1
        assert (await sidecar.chat("hi"))[1]["x-laneway-lane"] == "a"
        assert await sidecar.metric("laneway_lane_state", lane="a", state="closed") == 1
        assert (await sidecar.chat("hi"))[1]["x-laneway-lane"] == "a"


async def test_a_failed_probe_opens_the_circuit_again() -> None:
    async with running(TWO, _two_lanes(breaker=1, cooldown_ms=200)) as (sidecar, sims):
        sims["a"].set_mode("error500")
        await sidecar.chat("hi")
        await asyncio.sleep(0.25)
        await sidecar.chat("probe")  # fails again
        calls = sims["a"].state["requests"]
        assert calls == 2
        assert (await sidecar.chat("hi"))[1]["x-laneway-lane"] == "b"
        assert sims["a"].state["requests"] == calls


async def test_a_half_open_lane_gets_a_single_probe_among_concurrent_requests() -> None:
    async with running(TWO, _two_lanes(breaker=1, cooldown_ms=200)) as (sidecar, sims):
        sims["a"].set_mode("error500")
        await sidecar.chat("hi")
        sims["a"].set_mode("ok", latency_ms=150)
        await asyncio.sleep(0.25)
        before = sims["a"].state["requests"]
        results = await asyncio.gather(*(sidecar.chat(f"c{i}") for i in range(6)))
        lanes = sorted(headers["x-laneway-lane"] for _, headers, _ in results)
        assert lanes == ["a"] + ["b"] * 5
        assert sims["a"].state["requests"] == before + 1


@pytest.mark.parametrize(
    ("modes", "status", "outcomes"),
    [
        (("down", "error500"), 502, ["a: connectionError", "b: serverError"]),
        (("timeout", "timeout"), 504, ["a: timeout", "b: timeout"]),
        (("ratelimit", "ratelimit"), 503, ["a: rateLimited", "b: rateLimited"]),
    ],
)
async def test_when_every_lane_fails_one_error_lists_each_lane_and_its_outcome(
    modes: tuple[str, str], status: int, outcomes: list[str]
) -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {"a": lane(sims["a"].url, total_ms=300), "b": lane(sims["b"].url, total_ms=300)},
            {"main": ["a", "b"]},
            fallback=_fallback(),
        )

    async with running(TWO, build) as (sidecar, sims):
        sims["a"].set_mode(modes[0])
        sims["b"].set_mode(modes[1])
        got, headers, body = await sidecar.chat("hello")
        assert got == status
        message = body["error"]["message"]
        assert message.startswith("Every lane of route 'main' failed")
        for outcome in outcomes:
            assert outcome in message
        assert body["error"]["type"] == "server_error"
        assert headers["x-laneway-fallbacks"] == "1"
        assert headers["x-laneway-lane"] == "-"
        assert await sidecar.metric("laneway_requests_total", outcome="failed") == 1


async def test_refusal_of_low_risk_work_falls_back_but_a_high_risk_refusal_is_served() -> None:
    async with running(TWO, _two_lanes(triggers=[*ALL_TRIGGERS, "refusal"])) as (sidecar, sims):
        sims["a"].set_mode("refuse")
        _, headers, body = await sidecar.chat("Summarise this ticket")
        assert headers["x-laneway-lane"] == "b"
        assert await sidecar.metric("laneway_fallbacks_total", reason="refusal") == 1

        _, headers, body = await sidecar.chat(
            "Summarise this ticket", headers={"x-laneway-risk": "high"}
        )
        assert headers["x-laneway-lane"] == "a"
        assert body["choices"][0]["message"]["content"].startswith("I'm sorry")


async def test_when_every_lane_refuses_the_first_refusal_is_served_not_an_error() -> None:
    async with running(TWO, _two_lanes(triggers=[*ALL_TRIGGERS, "refusal"])) as (sidecar, sims):
        sims["a"].set_mode("refuse")
        sims["b"].set_mode("refuse")
        status, headers, body = await sidecar.chat("Summarise this ticket")
        assert status == 200
        assert (headers["x-laneway-lane"], headers["x-laneway-fallbacks"]) == ("a", "1")
        assert body["choices"][0]["message"]["content"].startswith("I'm sorry")
        # Both answers were paid for.
        assert await sidecar.metric("laneway_cost_usd_total", lane="b") > 0


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


ASK_WEATHER = "Please use get_weather for Oslo"  # the simulator calls the tool a prompt names


async def test_an_unusable_tool_call_falls_back_to_the_next_lane_of_the_route() -> None:
    triggers = [*ALL_TRIGGERS, "toolCallInvalid"]
    async with running(TWO, _two_lanes(triggers=triggers)) as (sidecar, sims):
        sims["a"].set_mode("invalid_json")  # tool call arguments that are not JSON
        status, headers, body = await sidecar.chat(ASK_WEATHER, tools=[WEATHER_TOOL])
        assert status == 200, body
        assert (headers["x-laneway-lane"], headers["x-laneway-fallbacks"]) == ("b", "1")
        call = body["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call["name"] == "get_weather"
        assert await sidecar.metric(
            "laneway_fallbacks_total", from_lane="a", to_lane="b", reason="toolCallInvalid"
        ) == 1
        # Without tools in the request there is no tool call to judge: lane a answers.
        _, headers, _ = await sidecar.chat(ASK_WEATHER)
        assert headers["x-laneway-lane"] == "a"

        # When every lane's call is unusable, the first answer is served, not an error.
        sims["b"].set_mode("invalid_json")
        status, headers, _ = await sidecar.chat(ASK_WEATHER, tools=[WEATHER_TOOL])
        assert (status, headers["x-laneway-lane"]) == (200, "a")


async def test_an_unusable_tool_call_is_served_when_the_trigger_is_off() -> None:
    async with running(TWO, _two_lanes()) as (sidecar, sims):
        sims["a"].set_mode("invalid_json")
        _, headers, _ = await sidecar.chat(ASK_WEATHER, tools=[WEATHER_TOOL])
        assert (headers["x-laneway-lane"], headers["x-laneway-fallbacks"]) == ("a", "0")


def _slow_primary(sims: dict[str, Any]) -> dict[str, Any]:
    # The primary's own timeout (5 s) is far longer than the request budgets below.
    return policy_doc(
        {"a": lane(sims["a"].url, total_ms=5_000), "b": lane(sims["b"].url, total_ms=5_000)},
        {"main": ["a", "b"]},
        latency_budget_ms=300,
    )


@pytest.mark.parametrize("hint", [None, "250"])
async def test_a_stuck_primary_gives_way_to_the_backup_within_the_latency_budget(
    hint: str | None,
) -> None:
    async with running(TWO, _slow_primary) as (sidecar, sims):
        sims["a"].set_mode("timeout")
        headers = {"x-laneway-latency-budget-ms": hint} if hint else None
        started = asyncio.get_running_loop().time()
        status, got, body = await sidecar.chat("hello", headers=headers)
        elapsed = asyncio.get_running_loop().time() - started
        assert status == 200, body
        assert got["x-laneway-lane"] == "b" and got["x-laneway-fallbacks"] == "1"
        assert elapsed < 1.5  # the budget, not a's 5 s timeout
        assert await sidecar.metric(
            "laneway_fallbacks_total", from_lane="a", to_lane="b", reason="timeout"
        ) == 1
        assert await sidecar.metric(
            "laneway_upstream_duration_seconds_count", lane="a", outcome="timeout"
        ) == 1


async def test_a_lane_reached_after_the_budget_is_spent_is_skipped_for_the_last_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {name: lane(sims[name].url, total_ms=5_000) for name in ("a", "b", "c")},
            {"main": ["a", "b", "c"]},
            latency_budget_ms=200,
        )

    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running({"a": "openai", "b": "openai", "c": "openai"}, build) as (sidecar, sims):
        sims["a"].set_mode("timeout")  # uses the whole budget
        status, headers, body = await sidecar.chat("hello")
        assert status == 200, body
        assert headers["x-laneway-lane"] == "c"
        assert sims["b"].state["requests"] == 0
    (line,) = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "laneway.decisions"]
    assert [(a["lane"], a["outcome"]) for a in line["lanesTried"]] == [
        ("a", "timeout"), ("b", "deadlinePassed"), ("c", "ok")]


async def test_the_last_lane_keeps_its_own_timeout_past_the_budget() -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {"a": lane(sims["a"].url, total_ms=5_000)}, {"main": ["a"]}, latency_budget_ms=100
        )

    async with running({"a": "openai"}, build) as (sidecar, sims):
        sims["a"].set_mode("ok", latency_ms=300)  # slower than the budget, nothing to fall to
        status, headers, _ = await sidecar.chat("hello")
        assert status == 200 and headers["x-laneway-lane"] == "a"


def _health_skip(sims: dict[str, Any], trip: str) -> None:
    sims["a"].set_mode("down" if trip == "circuitOpen" else "ratelimit")


@pytest.mark.parametrize("reason", ["circuitOpen", "coolingDown"])
async def test_backup_traffic_counts_as_fallback_while_the_primary_is_skipped(
    reason: str,
) -> None:
    async with running(TWO, _two_lanes(breaker=1, cooldown_ms=10_000)) as (sidecar, sims):
        _health_skip(sims, reason)
        await sidecar.chat("trip the primary")  # a fails once: circuit open or cooling down
        calls = sims["a"].state["requests"]
        status, headers, _ = await sidecar.chat("hello")
        assert status == 200 and headers["x-laneway-lane"] == "b"
        assert sims["a"].state["requests"] == calls  # skipped, not called
        assert headers["x-laneway-fallbacks"] == "1"
        assert await sidecar.metric(
            "laneway_fallbacks_total", from_lane="a", to_lane="b", reason=reason
        ) == 1


async def test_backup_traffic_counts_as_fallback_while_the_primary_is_down() -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        doc = policy_doc(
            {"a": lane(sims["a"].url), "b": lane(sims["b"].url), "c": lane(sims["c"].url)},
            {"main": ["a", "b"], "other": ["c", "a"]},
        )
        doc["lanes"]["a"]["phase"] = "Down"
        return versioned(doc)

    async with running({**TWO, "c": "openai"}, build) as (sidecar, sims):
        _, headers, _ = await sidecar.chat("hello")
        assert headers["x-laneway-lane"] == "b" and headers["x-laneway-fallbacks"] == "1"
        # A lane skipped behind the serving one is no fallback.
        _, headers, _ = await sidecar.chat("hello", model="other")
        assert headers["x-laneway-lane"] == "c" and headers["x-laneway-fallbacks"] == "0"
        assert await sidecar.metric("laneway_fallbacks_total", reason="down") == 1
        assert sims["a"].state["requests"] == 0
