"""Escalation of finished answers along the route path, observe mode, and explain vs serving."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.e2e.harness import lane, policy_doc, running
from tests.unit.routing_fixtures import agent_step

THREE = {"fast": "openai", "strong": "openai", "premium": "anthropic"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _ladder(
    triggers: list[str] | None = None,
    max_escalations: int = 1,
    mode: str = "enforce",
    tool_failure_threshold: int = 0,
    prices: dict[str, tuple[float, float]] | None = None,
    budget: dict[str, Any] | None = None,
    self_check: dict[str, Any] | None = None,
) -> Any:
    fast, strong = (prices or {}).get("fast", (0.1, 0.4)), (prices or {}).get("strong", (2, 8))

    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "fast": lane(sims["fast"].url, inp=fast[0], out=fast[1]),
                "strong": lane(sims["strong"].url, inp=strong[0], out=strong[1]),
                "premium": lane(sims["premium"].url, api="anthropic", inp=15, out=75),
            },
            {"fast": ["fast"], "strong": ["strong"], "premium": ["premium"]},
            default_route="fast",
            mode=mode,
            budget=budget,
            triage=[
                {"name": "technical", "when": {"keywordsAny": ["python", "sql"]}, "route": "strong"}
            ],
            escalation={
                "triggers": triggers
                or ["schemaInvalid", "toolCallInvalid", "truncated", "uncertain",
                    "latencyBudgetExceeded", "refusal"],
                "uncertaintyMarkers": ["I'm not sure"],
                "maxEscalations": max_escalations,
                "toolFailureThreshold": tool_failure_threshold,
                "path": {"fast": "strong", "strong": "premium"},
                **({"selfCheck": self_check} if self_check else {}),
            },
        )

    return build


def _decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "laneway.decisions"
    ]


@pytest.mark.parametrize(
    ("trigger", "mode", "extra", "headers"),
    [
        ("uncertain", "uncertain", {}, {}),
        ("truncated", "truncate", {}, {}),
        ("schemaInvalid", "invalid_json", {"response_format": {"type": "json_object"}}, {}),
        ("toolCallInvalid", "invalid_json", {"tools": [WEATHER_TOOL]}, {}),
        ("refusal", "refuse", {}, {}),
        ("latencyBudgetExceeded", "ok", {}, {"x-laneway-latency-budget-ms": "100"}),
    ],
)
async def test_each_escalation_trigger_moves_the_answer_to_the_next_route(
    trigger: str,
    mode: str,
    extra: dict[str, Any],
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder()) as (sidecar, sims):
        sims["fast"].set_mode(mode, latency_ms=200 if trigger == "latencyBudgetExceeded" else 0)
        status, got, body = await sidecar.chat(
            "Please use get_weather for Oslo", headers=headers, **extra
        )
        assert status == 200, body
        assert got["x-laneway-route"] == "strong"
        assert got["x-laneway-lane"] == "strong"
        assert got["x-laneway-escalations"] == "1"
        assert "escalated fast->strong" in got["x-laneway-reason"]
        assert await sidecar.metric(
            "laneway_escalations_total", from_route="fast", to_route="strong", reason=trigger
        ) == 1
    (line,) = _decision_lines(caplog)
    assert [(e["from"], e["to"], e["reason"]) for e in line["escalations"]] == [
        ("fast", "strong", trigger)
    ]
    assert [a["lane"] for a in line["lanesTried"]] == ["fast", "strong"]


async def test_an_escalation_chain_runs_fast_to_strong_to_premium() -> None:
    async with running(THREE, _ladder(max_escalations=2)) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        sims["strong"].set_mode("uncertain")
        _, headers, body = await sidecar.chat("What is our refund policy?")
        assert headers["x-laneway-route"] == "premium"
        assert headers["x-laneway-escalations"] == "2"
        assert body["choices"][0]["message"]["content"].startswith("[premium] ok")
        # Every answer on the way was paid for, and the cost says so.
        for name in ("fast", "strong", "premium"):
            assert await sidecar.metric("laneway_cost_usd_total", lane=name) > 0


async def test_max_escalations_stops_the_chain_and_serves_the_last_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder(max_escalations=1)) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        sims["strong"].set_mode("uncertain")
        _, headers, body = await sidecar.chat("What is our refund policy?")
        assert headers["x-laneway-route"] == "strong"
        assert headers["x-laneway-escalations"] == "1"
        assert body["choices"][0]["message"]["content"].startswith("I'm not sure")
        assert sims["premium"].state["requests"] == 0
    (line,) = _decision_lines(caplog)
    assert "maxEscalations 1 reached" in line["wouldEscalate"]


@pytest.mark.parametrize("on_exceed", ["skipLane", "reject"])
async def test_an_escalation_the_request_cannot_afford_any_more_is_not_made(
    on_exceed: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Output only is priced. With max_tokens 100, strong's estimate ($0.0008) fits the budget on
    # its own, but not after what the fast answer cost: maxCostPerRequest is per request.
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    ladder = _ladder(prices={"fast": (0, 1), "strong": (0, 8)},
                     budget={"maxCostPerRequest": 0.00080008, "onExceed": on_exceed})
    async with running(THREE, ladder) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        status, headers, body = await sidecar.chat("What is our refund policy?", max_tokens=100)
        assert status == 200, body
        assert (headers["x-laneway-route"], headers["x-laneway-escalations"]) == ("fast", "0")
        assert body["choices"][0]["message"]["content"].startswith("I'm not sure")
        assert sims["strong"].state["requests"] == 0
        assert await sidecar.metric("laneway_escalations_total") == 0
    (line,) = _decision_lines(caplog)
    assert "not escalated: route strong: strong estimated cost $0.000800 plus $0.0000" in (
        line["wouldEscalate"])
    assert "already spent on this request over budget $0.000800" in line["wouldEscalate"]


async def test_the_decision_line_carries_the_hints_to_group_by_task_family(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder()) as (sidecar, _):
        hints = {"x-laneway-task": "Summarize", "x-laneway-tier": "enterprise"}
        await sidecar.chat("What is our refund policy?", headers=hints)
        await sidecar.chat("What is our refund policy?")
    tagged, plain = _decision_lines(caplog)
    assert (tagged["task"], tagged["tier"], tagged["risk"]) == ("summarize", "enterprise", None)
    assert (plain["task"], plain["tier"], plain["risk"]) == (None, None, None)


async def test_a_good_answer_is_not_escalated() -> None:
    async with running(THREE, _ladder()) as (sidecar, sims):
        _, headers, _ = await sidecar.chat("What are your opening hours?")
        assert headers["x-laneway-route"] == "fast"
        assert headers["x-laneway-escalations"] == "0"
        assert sims["strong"].state["requests"] == 0
        assert await sidecar.metric("laneway_escalations_total") == 0


async def test_when_the_escalation_route_fails_the_first_answer_is_served() -> None:
    async with running(THREE, _ladder()) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        sims["strong"].set_mode("error500")
        status, headers, body = await sidecar.chat("What is our refund policy?")
        assert status == 200
        assert headers["x-laneway-lane"] == "fast"
        assert body["choices"][0]["message"]["content"].startswith("I'm not sure")


async def test_reported_tool_failures_route_the_request_up_before_any_call() -> None:
    async with running(THREE, _ladder(tool_failure_threshold=2)) as (sidecar, sims):
        _, headers, _ = await sidecar.chat("next step", headers={"x-laneway-tool-failures": "1"})
        assert headers["x-laneway-route"] == "fast"
        _, headers, _ = await sidecar.chat("next step", headers={"x-laneway-tool-failures": "2"})
        assert headers["x-laneway-route"] == "strong"
        assert sims["fast"].state["requests"] == 1


async def test_failed_tool_results_in_the_messages_route_the_request_up_too() -> None:
    async with running(THREE, _ladder(tool_failure_threshold=2)) as (sidecar, _):
        _, headers, _ = await sidecar.chat(body=agent_step("Error: timeout", "12 C, cloudy"))
        assert headers["x-laneway-route"] == "fast"
        _, headers, _ = await sidecar.chat(body=agent_step("Error: timeout", "error: rate limited"))
        assert headers["x-laneway-route"] == "strong"
        assert "2 tool failures -> strong" in headers["x-laneway-reason"]


async def test_streams_are_not_escalated_after_they_start() -> None:
    async with running(THREE, _ladder()) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        assert sidecar.session is not None
        async with sidecar.session.post(
            sidecar.url + "/v1/chat/completions",
            json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            text = await resp.text()
            assert resp.headers["x-laneway-route"] == "fast"
            assert resp.headers["x-laneway-escalations"] == "0"
        assert text.endswith("data: [DONE]\n\n")
        frames = [f.removeprefix("data: ") for f in text.split("\n\n") if f][:-1]
        content = "".join(
            json.loads(f)["choices"][0]["delta"].get("content") or "" for f in frames
        )
        assert content.startswith("I'm not sure")
        assert sims["strong"].state["requests"] == 0


async def test_observe_mode_serves_the_default_route_and_records_what_enforce_would_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder(mode="observe")) as (sidecar, sims):
        sims["fast"].set_mode("uncertain")
        _, headers, _ = await sidecar.chat("Why is this python loop slow?")
        assert headers["x-laneway-route"] == "fast"
        assert headers["x-laneway-escalations"] == "0"
        assert sims["strong"].state["requests"] == 0
        assert await sidecar.metric(
            "laneway_decisions_total", rule="technical", route="strong", mode="observe"
        ) == 1
        assert await sidecar.metric("laneway_requests_total", route="fast", outcome="ok") == 1
        enforce_cost = await sidecar.metric(
            "laneway_observe_enforce_cost_usd_total", policy="test-policy", route="strong"
        )
    (line,) = _decision_lines(caplog)
    assert line["mode"] == "observe"
    assert line["route"] == "fast"
    enforce = line["enforce"]
    assert {k: enforce[k] for k in ("route", "rule", "score", "lane")} == {
        "route": "strong", "rule": "technical", "score": None, "lane": "strong"
    }
    assert line["wouldEscalate"].startswith("uncertain")
    # What enforce would have spent on its (20x dearer) lane, next to what was spent.
    assert enforce["costUsd"] == pytest.approx(enforce_cost, rel=1e-6)
    assert enforce["costUsd"] > 5 * line["costUsd"] > 0


async def test_enforce_mode_records_no_would_be_cost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder()) as (sidecar, _):
        await sidecar.chat("Why is this python loop slow?")
        assert await sidecar.metric("laneway_observe_enforce_cost_usd_total") == 0
    (line,) = _decision_lines(caplog)
    assert "enforce" not in line


@pytest.mark.parametrize(
    ("prompt", "headers"),
    [
        ("What are your opening hours?", {}),
        ("Why does this SQL query time out?", {}),
        ("next step", {"x-laneway-tool-failures": "3"}),
    ],
)
async def test_explain_answers_what_serving_then_does(prompt: str, headers: dict[str, str]) -> None:
    async with running(THREE, _ladder(tool_failure_threshold=2)) as (sidecar, _):
        body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
        status, explain_headers, explained = await sidecar.post(
            "/v1/route/explain", body, headers=headers
        )
        assert status == 200
        _, served, _ = await sidecar.chat(body=body, headers=headers)
        assert explained["route"] == served["x-laneway-route"] == explain_headers["x-laneway-route"]
        assert explained["lane"] == served["x-laneway-lane"]
        assert {"route", "lane", "rule", "score", "reasons"} <= set(explained)


async def test_explain_sees_an_open_circuit_the_way_serving_does() -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {"a": lane(sims["a"].url), "b": lane(sims["b"].url)},
            {"main": ["a", "b"]},
            fallback={
                "triggers": ["serverError"],
                "retries": {"max": 0, "backoffMs": 5},
                "retryBudgetPercent": 20,
                "circuitBreaker": {"consecutiveFailures": 1, "cooldownMs": 60_000},
            },
        )

    async with running({"a": "openai", "b": "openai"}, build) as (sidecar, sims):
        sims["a"].set_mode("error500")
        await sidecar.chat("trip the breaker")
        body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
        _, _, explained = await sidecar.post("/v1/route/explain", body)
        _, served, _ = await sidecar.chat(body=body)
        assert explained["lane"] == served["x-laneway-lane"] == "b"
        assert any(s["lane"] == "a" and "circuitOpen" in s["reason"] for s in explained["skipped"])


SELF_CHECKED = {"triggers": ["uncertain", "selfCheck"],
                "self_check": {"lane": "premium", "instructions": "", "maxTokens": 64}}


@pytest.mark.parametrize(
    ("reply", "route", "verdict"),
    [
        ("FAIL: it does not give the refund window", "strong", "fail"),
        ("PASS - complete and correct", "fast", "pass"),
        ("The answer looks fine to me.", "fast", "error"),  # no verdict: served
    ],
)
async def test_the_self_check_lane_decides_whether_a_passing_answer_escalates(
    reply: str, route: str, verdict: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="laneway.decisions")
    async with running(THREE, _ladder(**SELF_CHECKED)) as (sidecar, sims):
        sims["premium"].set_mode("ok", answer=reply)
        status, headers, _ = await sidecar.chat("What is our refund policy?")
        assert status == 200
        assert headers["x-laneway-route"] == route
        # One check, of the fast answer: the strong answer cannot escalate any more.
        assert sims["premium"].state["requests"] == 1
        # The check is paid for, on the checking lane.
        assert await sidecar.metric("laneway_cost_usd_total", lane="premium") > 0
        fired = await sidecar.metric("laneway_escalations_total", reason="selfCheck")
        assert fired == (1 if verdict == "fail" else 0)
    (line,) = _decision_lines(caplog)
    (check,) = line["selfChecks"]
    assert (check["lane"], check["route"], check["verdict"]) == ("premium", "fast", verdict)
    if verdict == "fail":
        assert line["escalations"][0]["reason"] == "selfCheck"
        # The checker's reason may quote the request: it is not logged.
        assert "refund window" not in json.dumps(line)


async def test_a_failed_self_check_call_serves_the_answer() -> None:
    async with running(THREE, _ladder(**SELF_CHECKED)) as (sidecar, sims):
        sims["premium"].set_mode("error500")
        status, headers, _ = await sidecar.chat("What is our refund policy?")
        assert (status, headers["x-laneway-route"], headers["x-laneway-escalations"]) == (
            200, "fast", "0")


async def test_no_self_check_where_a_fail_could_not_escalate() -> None:
    # Observe mode, a route at the end of the path, and an answer another check already
    # escalates: none of them pays for a check.
    async with running(THREE, _ladder(mode="observe", **SELF_CHECKED)) as (sidecar, sims):
        await sidecar.chat("What is our refund policy?")
        assert (sims["fast"].state["requests"], sims["premium"].state["requests"]) == (1, 0)
    async with running(THREE, _ladder(**SELF_CHECKED)) as (sidecar, sims):
        sims["premium"].set_mode("ok", answer="FAIL: no")
        await sidecar.chat("What is our refund policy?", model="premium")  # end of the path
        assert sims["premium"].state["requests"] == 1  # its answer, no check
        sims["fast"].set_mode("uncertain")
        _, headers, _ = await sidecar.chat("What is our refund policy?")
        assert "(uncertain)" in headers["x-laneway-reason"]
        assert sims["premium"].state["requests"] == 1
