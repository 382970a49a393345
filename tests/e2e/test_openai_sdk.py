"""The real `openai` SDK, sync and async, streaming and not, against the real `laneway serve`."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tests.e2e.conftest import SECRET, Served


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="app-key-unused", max_retries=0)


def _async_client(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="app-key-unused", max_retries=0)


def test_sync_client_gets_an_answer_and_the_routing_headers(served: Served) -> None:
    with _client(served) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Where is my parcel?"}]
        )
    answer = raw.parse()
    assert answer.choices[0].message.content == "[fast] ok: Where is my parcel?"
    assert raw.headers["x-laneway-route"] == "fast"
    assert raw.headers["x-laneway-lane"] == "fast"
    assert raw.headers["x-laneway-fallbacks"] == "0"
    assert raw.headers["x-laneway-decision-id"]


def test_sync_client_streams_an_answer(served: Served) -> None:
    with _client(served) as client:
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Explain python decorators"}],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "[strong] ok: Explain python decorators"


async def test_async_client_gets_an_answer_from_a_named_route(served: Served) -> None:
    async with _async_client(served) as client:
        answer = await client.chat.completions.create(
            model="strong", messages=[{"role": "user", "content": "hello"}]
        )
    assert answer.choices[0].message.content == "[strong] ok: hello"
    assert answer.usage is not None and answer.usage.total_tokens > 0


async def test_async_client_streams_with_usage(served: Served) -> None:
    async with _async_client(served) as client:
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Short question"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[fast] ok: Short question"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_a_provider_outage_moves_sdk_traffic_to_the_other_provider(served: Served) -> None:
    served.sims["fast"].set_mode("down")
    try:
        async with _async_client(served) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "Is the shop open?"}]
            )
            stream = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "And now?"}], stream=True
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            streamed = "".join(pieces)
    finally:
        served.sims["fast"].set_mode("ok")
    assert raw.headers["x-laneway-lane"] == "backup"
    assert raw.parse().choices[0].message.content == "[backup] ok: Is the shop open?"
    assert streamed == "[backup] ok: And now?"


def test_router_errors_surface_as_the_sdks_typed_exceptions(served: Served) -> None:
    with _client(served) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError) as bad_hint:
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-laneway-latency-budget-ms": "fast please"},
            )
    assert missing.value.code == "model_not_found"
    assert "x-laneway-latency-budget-ms" in bad_hint.value.message
    assert missing.value.response.headers["x-laneway-decision-id"]


def test_the_models_list_reads_through_the_sdk(served: Served) -> None:
    with _client(served) as client:
        ids = {m.id for m in client.models.list()}
    assert ids == {"auto", "fast", "strong", "backup"}


def test_the_process_logs_one_decision_line_per_request_and_never_the_key(served: Served) -> None:
    def decision_lines() -> list[dict[str, Any]]:
        # Decision lines are whole JSON objects on their own lines (stdout); the diagnostic log
        # (stderr, in the same file here) is text.
        return [json.loads(line) for line in served.log().splitlines()
                if line.startswith('{"decisionId"')]

    before = {line["decisionId"] for line in decision_lines()}
    with _client(served) as client:
        done = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    decision_id = done.headers["x-laneway-decision-id"]

    deadline = time.monotonic() + 5  # lines are written in batches, at most 0.25 s apart
    while not (found := [r for r in decision_lines() if r["decisionId"] == decision_id]):
        assert time.monotonic() < deadline, "no decision line for the request"
        time.sleep(0.05)
    (record,) = found
    assert decision_id not in before
    assert {"decisionId", "policy", "mode", "route", "lanesTried", "latencyMs", "costUsd"} <= set(
        record
    )
    assert record["outcome"] == "ok" and record["lanesTried"][0]["outcome"] == "ok"
    assert SECRET not in served.log()


