"""The simulated provider speaking Anthropic's Messages API: shapes, streaming, tools, modes."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from router_sidecar.simulator import SimulatedProvider
from tests.unit.test_simulator import parse_sse

HEADERS = {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": "claude-lane",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "hello there"}],
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture(autouse=True)
def quiet_server(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Dropped, held and broken connections must not leave errors or stray tasks behind."""
    yield
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] in ("asyncio", "aiohttp")
    ]
    assert noisy == []


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedProvider]:
    async with SimulatedProvider(model="sim-claude", api="anthropic", api_key="sk-ant") as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    sim: SimulatedProvider,
    body: dict[str, Any],
    headers: dict[str, str] = HEADERS,
) -> tuple[int, Any]:
    async with http.post(f"{sim.url}/messages", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def stream(
    http: aiohttp.ClientSession, sim: SimulatedProvider, body: dict[str, Any]
) -> list[tuple[str | None, dict[str, Any]]]:
    async with http.post(
        f"{sim.url}/messages", json={**body, "stream": True}, headers=HEADERS
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return [(name, json.loads(data)) for name, data in parse_sse(await resp.text())]


async def test_a_plain_answer_has_the_message_shape(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    status, message = await post(http, sim, {**BODY, "system": "be brief, please"})

    assert status == 200
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    assert message["model"] == "claude-lane"
    assert message["content"] == [{"type": "text", "text": "[sim-claude] ok: hello there"}]
    assert message["stop_reason"] == "end_turn"
    # "be brief, please" + "hello there" = 27 characters; the answer is 28.
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 7}


async def test_content_blocks_and_tool_results_are_read(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    body = {
        **BODY,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "use the tool for Oslo"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"}],
            },
        ],
    }
    status, message = await post(http, sim, body)

    assert status == 200
    assert message["stop_reason"] == "end_turn", "after a tool result the model answers in text"
    assert message["content"][0]["text"] == "[sim-claude] ok: use the tool for Oslo"
    # Prompt: the question (21), the tool call's input "{}" (2) and the result "rain" (4).
    prompt_chars = 21 + 2 + 4 + len(json.dumps([WEATHER_TOOL]))
    assert message["usage"]["input_tokens"] == -(-prompt_chars // 4)


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        ({k: v for k, v in BODY.items() if k != "max_tokens"}, HEADERS, "max_tokens"),
        ({k: v for k, v in BODY.items() if k != "messages"}, HEADERS, "message"),
        (BODY, {"x-api-key": "sk-ant"}, "anthropic-version"),
    ],
)
async def test_invalid_requests_get_anthropic_shaped_400s(
    sim: SimulatedProvider,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    headers: dict[str, str],
    needle: str,
) -> None:
    status, error = await post(http, sim, body, headers)

    assert status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]


async def test_a_wrong_or_missing_api_key_gets_401(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    wrong = await post(http, sim, BODY, {**HEADERS, "x-api-key": "nope"})
    missing = await post(http, sim, BODY, {"anthropic-version": "2023-06-01"})

    for status, error in (wrong, missing):
        assert status == 401
        assert error == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }


async def test_a_stream_follows_the_messages_event_sequence(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    _, whole = await post(http, sim, BODY)
    events = await stream(http, sim, BODY)

    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert deltas > 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)

    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == whole["usage"]["input_tokens"]
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == whole["content"][0]["text"]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == whole["usage"]["output_tokens"]


async def test_a_tool_request_gets_a_tool_use_block(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    body = {**BODY, "tools": [WEATHER_TOOL], "messages": [{"role": "user", "content": "hi"}]}
    status, message = await post(http, sim, {**body, "tool_choice": {"type": "any"}})

    assert status == 200
    assert message["stop_reason"] == "tool_use"
    block = message["content"][0]
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert block["id"].startswith("toolu_")
    jsonschema.validate(block["input"], WEATHER_TOOL["input_schema"])


async def test_a_streamed_tool_use_sends_input_json_deltas(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    body = {
        **BODY,
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "call get_weather"}],
    }
    events = await stream(http, sim, body)

    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["input"] == {}
    partial = [
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    jsonschema.validate(json.loads("".join(partial)), WEATHER_TOOL["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_structured_output_matches_the_schema(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    schema = {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["verdict"],
    }
    body = {**BODY, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    _, message = await post(http, sim, body)

    jsonschema.validate(json.loads(message["content"][0]["text"]), schema)


@pytest.mark.parametrize(
    ("mode", "status", "error_type"),
    [
        ("error500", 500, "api_error"),
        ("overloaded", 529, "overloaded_error"),
        ("ratelimit", 429, "rate_limit_error"),
        ("context_overflow", 400, "invalid_request_error"),
    ],
)
async def test_error_modes_answer_with_anthropic_shaped_errors(
    sim: SimulatedProvider, http: aiohttp.ClientSession, mode: str, status: int, error_type: str
) -> None:
    sim.set_mode(mode)

    async with http.post(f"{sim.url}/messages", json=BODY, headers=HEADERS) as resp:
        body = await resp.json()
        retry_after = resp.headers.get("retry-after")

    assert resp.status == status
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert retry_after == ("1" if mode == "ratelimit" else None)


async def test_context_overflow_names_the_token_counts(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    sim.set_mode("ok", context_window=10)

    _, error = await post(http, sim, {**BODY, "messages": [{"role": "user", "content": "y" * 80}]})

    assert error["error"]["message"] == "prompt is too long: 20 tokens > 10 maximum"
    sim.set_mode("context_overflow")
    _, forced = await post(http, sim, BODY)
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 10 maximum", forced["error"]["message"])


@pytest.mark.parametrize(
    ("mode", "stop_reason", "check"),
    [
        ("refuse", "end_turn", lambda t: t == "I'm sorry, but I can't help with that."),
        ("truncate", "max_tokens", lambda t: "[sim-claude] ok: hello there".startswith(t)),
        ("uncertain", "end_turn", lambda t: t.startswith("I'm not sure")),
        ("invalid_json", "end_turn", lambda t: t == "[sim-claude] ok: hello there"),
    ],
)
async def test_answer_modes_shape_the_text(
    sim: SimulatedProvider,
    http: aiohttp.ClientSession,
    mode: str,
    stop_reason: str,
    check: Any,
) -> None:
    sim.set_mode(mode)

    _, message = await post(http, sim, BODY)
    streamed = await stream(http, sim, BODY)

    assert message["stop_reason"] == stop_reason
    assert check(message["content"][0]["text"])
    assert streamed[-2][1]["delta"]["stop_reason"] == stop_reason


async def test_invalid_json_breaks_structured_output(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    sim.set_mode("invalid_json")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {**BODY, "output_config": {"format": {"type": "json_schema", "schema": schema}}}

    _, message = await post(http, sim, body)

    with pytest.raises(json.JSONDecodeError):
        json.loads(message["content"][0]["text"])


async def test_stream_error_sends_an_error_event_and_breaks_the_stream(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    sim.set_mode("stream_error")
    raw = b""
    async with http.post(
        f"{sim.url}/messages", json={**BODY, "stream": True}, headers=HEADERS
    ) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in resp.content.iter_any():
                raw += piece

    events = parse_sse(raw.decode())
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["error"]["type"] == "overloaded_error"
    assert all(name != "message_stop" for name, _ in events)


async def test_down_resets_the_connection(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    sim.set_mode("down")

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, sim, BODY)
    assert sim.state["requests"] == 1


async def test_timeout_holds_the_request_until_the_client_gives_up(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    sim.set_mode("timeout")

    with pytest.raises(TimeoutError):
        async with http.post(
            f"{sim.url}/messages",
            json=BODY,
            headers=HEADERS,
            timeout=aiohttp.ClientTimeout(total=0.2),
        ):
            pass


async def test_models_lists_the_simulated_model(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sim.url}/models", headers=HEADERS) as resp:
        body = await resp.json()

    assert [m["id"] for m in body["data"]] == ["sim-claude"]
    assert body["data"][0]["type"] == "model"
    assert body["has_more"] is False
