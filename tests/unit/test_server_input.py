"""The sidecar's HTTP surface: bad input, endpoints, headers, metrics names, secrets hygiene."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router_sidecar.reload import ConfigStore
from router_sidecar.server import RecentDecisions
from tests.e2e.harness import Sidecar, lane, policy_doc, running, versioned

LANEWAY_HEADERS = {
    "x-laneway-decision-id",
    "x-laneway-route",
    "x-laneway-lane",
    "x-laneway-reason",
    "x-laneway-escalations",
    "x-laneway-fallbacks",
}


def _one_lane(sims: dict[str, Any]) -> dict[str, Any]:
    return policy_doc(
        {"mini": lane(sims["mini"].url), "big": lane(sims["big"].url, caps=["streaming"])},
        {"fast": ["mini"], "large": ["big"]},
    )


SIMS = {"mini": "openai", "big": "openai"}


def _assert_openai_error(status: int, headers: dict[str, str], body: Any, want: int) -> None:
    assert status == want, body
    assert {h.lower() for h in headers} >= LANEWAY_HEADERS
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ([1, 2], None, "JSON object"),
        ({"model": "auto"}, "messages", "non-empty list"),
        ({"model": "auto", "messages": []}, "messages", "non-empty list"),
        ({"model": "auto", "messages": ["hi"]}, "messages[0]", "string 'role'"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model", "non-empty string"),
        (
            {"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "x"}]},
            "stream",
            "true or false",
        ),
        (
            {"model": "auto", "tools": {}, "messages": [{"role": "user", "content": "x"}]},
            "tools",
            "a list",
        ),
    ],
)
async def test_a_malformed_body_is_a_400_that_names_the_field(
    payload: Any, param: str | None, fragment: str
) -> None:
    async with running(SIMS, _one_lane) as (sidecar, sims):
        status, headers, body = await sidecar.post("/v1/chat/completions", payload)
        _assert_openai_error(status, headers, body, 400)
        assert body["error"]["param"] == param
        assert fragment in body["error"]["message"]
        assert sims["mini"].state["requests"] == 0


async def test_text_that_is_not_json_is_a_400() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        status, headers, body = await sidecar.post("/v1/chat/completions", b'{"model": "auto",')
        _assert_openai_error(status, headers, body, 400)
        assert body["error"]["code"] == "invalid_json"


async def test_a_body_over_the_limit_is_a_413_with_or_without_content_length() -> None:
    async with running(SIMS, _one_lane, max_body_bytes=2048) as (sidecar, _):
        big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 5000}]}
        status, headers, body = await sidecar.post("/v1/chat/completions", big)
        _assert_openai_error(status, headers, body, 413)
        assert "2048 bytes" in body["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b" " * 1000

        assert sidecar.session is not None
        async with sidecar.session.post(sidecar.url + "/v1/chat/completions", data=chunks()) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_too_large"


async def test_an_unknown_model_is_a_404_listing_routes_and_lanes() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        status, headers, body = await sidecar.chat("hi", model="gpt-5")
        _assert_openai_error(status, headers, body, 404)
        assert body["error"]["code"] == "model_not_found"
        for name in ("auto", "fast", "large", "mini", "big"):
            assert name in body["error"]["message"]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-laneway-latency-budget-ms", "soon"),
        ("x-laneway-tool-failures", "-1"),
        ("x-laneway-tier", "gold plated!"),
    ],
)
async def test_a_bad_hint_header_is_a_400_naming_the_header(header: str, value: str) -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        status, headers, body = await sidecar.chat("hi", headers={header: value})
        _assert_openai_error(status, headers, body, 400)
        assert header in body["error"]["message"]
        assert body["error"]["code"] == "invalid_hint"


async def test_a_request_no_lane_can_serve_is_a_400_that_says_why() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        status, headers, body = await sidecar.chat("hi", model="large", tools=tools)
        _assert_openai_error(status, headers, body, 400)
        assert "big: missing capability tools" in body["error"]["message"]


@pytest.mark.parametrize("on_exceed", ["reject", "skipLane"])
async def test_a_request_over_the_cost_budget_is_a_402(on_exceed: str) -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {"mini": lane(sims["mini"].url, inp=1000, out=1000)},
            {"fast": ["mini"]},
            budget={"maxCostPerRequest": 0.0001, "onExceed": on_exceed},
        )

    async with running({"mini": "openai"}, build) as (sidecar, sims):
        status, headers, body = await sidecar.chat("hi")
        _assert_openai_error(status, headers, body, 402)
        assert body["error"]["code"] == "budget_exceeded"
        assert sims["mini"].state["requests"] == 0
        assert await sidecar.metric("laneway_requests_total", outcome="budget") == 1


@pytest.mark.parametrize(("on_exceed", "status"), [("reject", 402), ("skipLane", 400)])
async def test_a_lane_that_cannot_serve_before_one_over_budget_is_a_402_only_with_reject(
    on_exceed: str, status: int
) -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "plain": lane(sims["plain"].url, caps=[]),
                "pricey": lane(sims["pricey"].url, inp=1000, out=1000),
            },
            {"fast": ["plain", "pricey"]},
            budget={"maxCostPerRequest": 0.0001, "onExceed": on_exceed},
        )

    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    async with running({"plain": "openai", "pricey": "openai"}, build) as (sidecar, sims):
        got, headers, body = await sidecar.chat("hi", tools=tools)
        _assert_openai_error(got, headers, body, status)
        assert "plain: missing capability tools" in body["error"]["message"]
        assert "pricey: estimated cost" in body["error"]["message"]
        assert sims["plain"].state["requests"] == sims["pricey"].state["requests"] == 0


async def test_bad_requests_do_not_disturb_concurrent_good_ones() -> None:
    async with running(SIMS, _one_lane) as (sidecar, sims):
        sims["mini"].set_mode("ok", latency_ms=20)
        good = [sidecar.chat(f"question {i}") for i in range(20)]
        bad = [sidecar.post("/v1/chat/completions", b"{nope") for _ in range(10)]
        bad += [sidecar.chat("x", model="nope") for _ in range(10)]
        bad += [sidecar.chat("x", headers={"x-laneway-tool-failures": "many"}) for _ in range(10)]
        results = await asyncio.gather(*good, *bad)
        assert [r[0] for r in results[:20]] == [200] * 20
        assert sorted({r[0] for r in results[20:]}) == [400, 404]
        assert await sidecar.metric("laneway_requests_total", outcome="ok") == 20
        assert await sidecar.metric("laneway_requests_total", outcome="bad_request") == 30


async def test_unknown_paths_and_wrong_methods_answer_in_the_openai_error_shape() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        status, headers, body = await sidecar.post("/v1/embeddings", {"input": "x"})
        _assert_openai_error(status, headers, body, 404)
        assert sidecar.session is not None
        async with sidecar.session.get(sidecar.url + "/v1/chat/completions") as resp:
            _assert_openai_error(resp.status, dict(resp.headers), await resp.json(), 405)


async def test_models_lists_auto_the_routes_and_the_lanes() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        assert sidecar.session is not None
        async with sidecar.session.get(sidecar.url + "/v1/models") as resp:
            body = await resp.json()
            assert {h.lower() for h in resp.headers} >= LANEWAY_HEADERS
        assert body["object"] == "list"
        kinds = {m["id"]: m["laneway"]["kind"] for m in body["data"]}
        assert kinds == {
            "auto": "auto",
            "fast": "route",
            "large": "route",
            "mini": "lane",
            "big": "lane",
        }
        assert all(m["object"] == "model" for m in body["data"])


async def test_readiness_reports_the_config_version_and_is_503_without_a_config() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        status, text = await sidecar.get("/readyz")
        assert status == 200
        current = sidecar.store.current
        assert current is not None
        assert json.loads(text)["configVersion"] == current.version
        assert (await sidecar.get("/healthz"))[0] == 200

    async with Sidecar(ConfigStore()) as empty:
        status, _ = await empty.get("/readyz")
        assert status == 503
        assert (await empty.get("/healthz"))[0] == 200
        status, headers, body = await empty.chat("hi")
        _assert_openai_error(status, headers, body, 503)
        assert body["error"]["code"] == "not_ready"


async def test_feedback_is_validated_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="laneway.feedback")
    async with running(SIMS, _one_lane) as (sidecar, _):
        _, headers, _ = await sidecar.chat("hi")
        decision_id = headers["x-laneway-decision-id"]
        status, _, body = await sidecar.post(
            "/v1/feedback", {"decision_id": decision_id, "outcome": "corrected"}
        )
        assert status == 200 and body["recorded"] is True
        assert await sidecar.metric(
            "laneway_feedback_total", outcome="corrected", route="fast"
        ) == 1

        for bad in (
            {"decision_id": decision_id, "outcome": "meh"},
            {"outcome": "accepted"},
            {"decision_id": "", "outcome": "accepted"},
            ["accepted"],
        ):
            status, headers, body = await sidecar.post("/v1/feedback", bad)
            _assert_openai_error(status, headers, body, 400)
        assert await sidecar.metric("laneway_feedback_total") == 1
    assert any(decision_id in r.getMessage() for r in caplog.records)


async def test_feedback_for_a_decision_this_router_never_made_is_a_404() -> None:
    async with running(SIMS, _one_lane) as (sidecar, _):
        made_up = "0123456789abcdef01234567"
        status, headers, body = await sidecar.post(
            "/v1/feedback", {"decision_id": made_up, "outcome": "accepted"}
        )
        _assert_openai_error(status, headers, body, 404)
        assert body["error"]["param"] == "decision_id"
        # Ids of explain answers are not served decisions either.
        _, explained, _ = await sidecar.post(
            "/v1/route/explain", {"messages": [{"role": "user", "content": "hi"}]}
        )
        status, _, _ = await sidecar.post(
            "/v1/feedback",
            {"decision_id": explained["x-laneway-decision-id"], "outcome": "accepted"},
        )
        assert status == 404
        assert await sidecar.metric("laneway_feedback_total") == 0


def test_the_decision_memory_forgets_the_oldest_ids_first() -> None:
    recent = RecentDecisions(limit=3)
    for i in range(5):
        recent.add(f"id{i}", "p", f"r{i}")
    assert recent.get("id0") is None and recent.get("id1") is None
    assert recent.get("id4") == ("p", "r4") and recent.get("id2") == ("p", "r2")


# The SPEC's metric families and their label sets.
SPEC_METRICS = {
    "laneway_requests": {"policy", "route", "lane", "outcome"},
    "laneway_request_duration_seconds": {"policy", "route"},
    "laneway_upstream_duration_seconds": {"lane", "outcome"},
    "laneway_router_overhead_seconds": set(),
    "laneway_tokens": {"lane", "direction"},
    "laneway_cost_usd": {"policy", "route", "lane"},
    "laneway_escalations": {"from_route", "to_route", "reason"},
    "laneway_fallbacks": {"from_lane", "to_lane", "reason"},
    "laneway_retries": {"lane"},
    "laneway_lane_state": {"lane", "state"},
    "laneway_config_info": {"version"},
    "laneway_feedback": {"outcome", "route"},
    "laneway_decisions": {"policy", "rule", "route", "mode"},
}


async def test_metrics_use_the_spec_names_and_labels() -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        doc = _one_lane(sims)
        doc["routes"][0]["lanes"] = ["mini", "big"]
        doc["escalation"] = {
            "triggers": ["uncertain"],
            "uncertaintyMarkers": [],
            "maxEscalations": 1,
            "toolFailureThreshold": 0,
            "path": {"fast": "large"},
        }
        doc["fallback"]["retries"] = {"max": 1, "backoffMs": 1}
        return versioned(doc)

    async with running(SIMS, build) as (sidecar, sims):
        sims["mini"].set_mode("error500")
        await sidecar.chat("hi")
        sims["mini"].set_mode("uncertain")
        await sidecar.chat("hi")
        _, served, _ = await sidecar.chat("hi")
        decision_id = served["x-laneway-decision-id"]
        await sidecar.post("/v1/feedback", {"decision_id": decision_id, "outcome": "accepted"})
        status, text = await sidecar.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, labels in SPEC_METRICS.items():
        assert name in families, name
        samples = [s for s in families[name].samples if not s.name.endswith("_created")]
        assert samples, name
        for sample in samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert families["laneway_tokens"].samples[0].value > 0


async def test_secrets_reach_the_provider_but_never_logs_metrics_or_headers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-TOPSECRET-4242"
    (tmp_path / "provider-a").mkdir()
    (tmp_path / "provider-a" / "apiKey").write_text(secret + "\n")

    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "a": lane(sims["a"].url, secret=("provider-a", "apiKey")),
                "b": lane(sims["b"].url, api="anthropic", secret=("provider-a", "apiKey")),
                "c": lane(sims["c"].url, secret=("provider-missing", "apiKey")),
            },
            {"main": ["a", "b"], "nokey": ["c"]},
        )

    caplog.set_level(logging.DEBUG)
    sims_spec = {"a": "openai", "b": "anthropic", "c": "openai"}
    keys = {"a": secret, "b": secret}  # the simulators refuse calls without this key
    async with running(
        sims_spec, build, secrets_dir=str(tmp_path), api_keys=keys
    ) as (sidecar, sims):
        status, headers, _ = await sidecar.chat("hi")
        assert status == 200 and headers["x-laneway-lane"] == "a"
        sims["a"].set_mode("down")
        status, headers, _ = await sidecar.chat("hi")
        assert status == 200 and headers["x-laneway-lane"] == "b"
        status, headers, _ = await sidecar.chat("hi", model="nokey")
        assert status == 200
        _, metrics_text = await sidecar.get("/metrics")
        all_headers = json.dumps(headers)

    assert secret not in caplog.text
    assert secret not in metrics_text
    assert secret not in all_headers
    warnings = [r for r in caplog.records if "provider-missing" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
