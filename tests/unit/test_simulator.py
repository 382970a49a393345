"""The simulated provider speaking OpenAI's Chat Completions API, checked with the real SDK.

Also holds `parse_sse` and `CHAT_BODY`, which the other `test_simulator_*` files import.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest

from router_sidecar.simulator import SimulatedProvider

CHAT_BODY: dict[str, Any] = {
    "model": "lane-model",
    "messages": [{"role": "user", "content": "hello there"}],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


def parse_sse(raw: str) -> list[tuple[str | None, str]]:
    """Server-sent events as (event name or None, data), as a conforming client reads them."""
    assert raw.endswith("\n\n"), "every event must end with a blank line"
    events = []
    for block in raw.split("\n\n"):
        if not block:
            continue
        name = None
        data = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedProvider]:
    async with SimulatedProvider(model="sim-a") as provider:
        yield provider


@pytest.fixture
async def client(sim: SimulatedProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=sim.url, api_key="any", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_plain_answer_names_the_simulated_model_and_echoes_the_prompt(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(
        model="lane-model", messages=[{"role": "user", "content": "hello there"}]
    )

    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "lane-model"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "[sim-a] ok: hello there"
    assert reply.choices[0].finish_reason == "stop"


async def test_the_echo_is_cut_to_forty_characters_of_the_last_user_message(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "x" * 100},
        ],
    )

    assert reply.choices[0].message.content == "[sim-a] ok: " + "x" * 40


async def test_usage_counts_a_token_per_four_characters_of_prompt_and_answer(
    client: openai.AsyncOpenAI,
) -> None:
    messages = [
        {"role": "system", "content": "s" * 10},
        {"role": "user", "content": [{"type": "text", "text": "u" * 31}]},
    ]
    create = client.chat.completions.create
    reply = await create(model="m", messages=messages)  # type: ignore[arg-type]

    answer = reply.choices[0].message.content or ""
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 11  # ceil(41 / 4)
    assert reply.usage.completion_tokens == -(-len(answer) // 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_a_stream_is_chunk_objects_ending_in_done(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sim.url}/chat/completions", json=CHAT_BODY) as resp:
        whole = await resp.json()
    async with http.post(f"{sim.url}/chat/completions", json={**CHAT_BODY, "stream": True}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = parse_sse(await resp.text())

    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all("usage" not in c for c in chunks)
    assert len(chunks) > 3, "the answer arrives in several pieces"


async def test_include_usage_adds_a_usage_chunk_before_done(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{sim.url}/chat/completions", json=CHAT_BODY) as resp:
        whole = await resp.json()
    async with http.post(f"{sim.url}/chat/completions", json=body) as resp:
        events = parse_sse(await resp.text())

    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_the_openai_sdk_reads_the_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = []
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage

    assert "".join(pieces) == "[sim-a] ok: stream me"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize(
    "prompt",
    ["Use the tool to check Paris", "what does get_weather say for Paris?"],
)
async def test_a_user_asking_for_a_tool_gets_a_tool_call_with_valid_arguments(
    client: openai.AsyncOpenAI, prompt: str
) -> None:
    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": prompt}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


async def test_tools_on_offer_alone_do_not_trigger_a_call(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None


async def test_tool_choice_decides_over_the_prompt(client: openai.AsyncOpenAI) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    forced = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL, other],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    refused = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "use the tool"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none",
    )

    assert forced.choices[0].message.tool_calls is not None
    assert forced.choices[0].message.tool_calls[0].function.name == "lookup"
    assert refused.choices[0].message.tool_calls is None


async def test_after_a_tool_result_the_model_answers_in_text(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "use the tool for Paris"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "[sim-a] ok: use the tool for Paris"


async def test_a_streamed_tool_call_assembles_into_valid_arguments(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "call get_weather please"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    names, arguments, finishes = [], [], []
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                arguments.append(call.function.arguments)
        finishes.append(chunk.choices[0].finish_reason)

    assert names == ["get_weather"]
    assert len(arguments) > 1, "arguments arrive as several deltas"
    jsonschema.validate(json.loads("".join(arguments)), WEATHER_TOOL["function"]["parameters"])
    assert finishes[-1] == "tool_calls"


async def test_json_object_mode_answers_with_a_json_object(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "answer in json"}],
        response_format={"type": "json_object"},
    )

    value = json.loads(reply.choices[0].message.content or "")
    assert value == {"answer": "[sim-a] ok: answer in json", "model": "sim-a"}


async def test_json_schema_mode_answers_with_an_object_that_matches_the_schema(
    client: openai.AsyncOpenAI,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 10},
            "score": {"type": "number", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "owner": {"anyOf": [{"$ref": "#/$defs/person"}, {"type": "null"}]},
        },
        "required": ["title", "score", "tags", "status", "owner"],
        "additionalProperties": False,
        "$defs": {
            "person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "active": {"type": "boolean"}},
                "required": ["name", "active"],
            }
        },
    }
    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "file a ticket"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "ticket", "schema": schema, "strict": True},
        },
    )

    value = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    assert value["owner"] is not None


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], max_tokens=2
    )

    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "[sim-a] "
    assert reply.usage is not None and reply.usage.completion_tokens == 2


async def test_models_lists_the_simulated_model(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]

    assert models == ["sim-a"]


async def test_an_api_key_is_required_when_one_is_configured() -> None:
    async with SimulatedProvider(api_key="sk-right") as sim:
        wrong = openai.AsyncOpenAI(base_url=sim.url, api_key="sk-wrong", max_retries=0)
        right = openai.AsyncOpenAI(base_url=sim.url, api_key="sk-right", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.chat.completions.create(**CHAT_BODY)
        reply = await right.chat.completions.create(**CHAT_BODY)
        await wrong.close()
        await right.close()

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(caught.value.body) and "sk-right" not in str(caught.value.body)
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({**CHAT_BODY, "max_tokens": 0}, "max_tokens"),
    ],
)
async def test_invalid_requests_get_openai_shaped_400s(
    sim: SimulatedProvider, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    async with http.post(f"{sim.url}/chat/completions", json=body) as resp:
        error = (await resp.json())["error"]

    assert resp.status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


async def test_a_body_that_is_not_json_gets_a_400(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sim.url}/chat/completions", data=b"{not json") as resp:
        error = (await resp.json())["error"]

    assert resp.status == 400
    assert "JSON" in error["message"]


async def test_unknown_paths_get_an_openai_shaped_404(
    sim: SimulatedProvider, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sim.url}/embeddings", json={}) as resp:
        error = (await resp.json())["error"]

    assert resp.status == 404
    assert error["message"] == "Invalid URL (POST /v1/embeddings)"


async def test_healthz_answers_200(sim: SimulatedProvider, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url.removesuffix("/v1") + "/healthz") as resp:
        assert resp.status == 200
