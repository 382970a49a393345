"""OpenAI shape <-> Anthropic Messages: the pure translation, then through the sidecar against the
simulator's anthropic mode (non-streaming, streaming, tool calls)."""

from __future__ import annotations

import json
from typing import Any

import openai

from router_sidecar.config import Lane, Provider
from router_sidecar.providers.anthropic import (
    AnthropicAdapter,
    AnthropicStream,
    messages_url,
    translate_answer,
)
from router_sidecar.providers.base import StreamError
from tests.e2e.harness import lane, policy_doc, running

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _lane(max_out: int = 4096, base: str = "http://x/v1") -> Lane:
    return Lane(
        name="claude",
        provider=Provider("anthropic", base, "claude-test", None),
        input_per_million=1,
        output_per_million=5,
        context_window=200_000,
        max_output_tokens=max_out,
        capabilities=frozenset({"tools", "streaming"}),
        connect_ms=1000,
        first_token_ms=1000,
        total_ms=1000,
    )


def _payload(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return AnthropicAdapter().build_request(_lane(**kw), body, "k", stream=False).payload


def test_system_messages_become_the_system_field_and_turns_keep_their_order() -> None:
    payload = _payload(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            ]
        }
    )
    assert payload["system"] == "Be brief."
    assert [t["role"] for t in payload["messages"]] == ["user", "assistant", "user"]
    assert payload["messages"][2]["content"] == [{"type": "text", "text": "Weather?"}]
    assert payload["model"] == "claude-test"


def test_max_tokens_is_required_so_the_lane_limit_fills_in_and_caps_it() -> None:
    assert _payload({"messages": [{"role": "user", "content": "x"}]})["max_tokens"] == 4096
    big = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100_000}
    assert _payload(big)["max_tokens"] == 4096
    small = {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 50}
    assert _payload(small)["max_tokens"] == 50


def test_tools_tool_calls_and_tool_results_translate_to_blocks() -> None:
    payload = _payload(
        {
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "-3C, snow"},
                {"role": "user", "content": "Thanks, and tomorrow?"},
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert payload["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert payload["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assistant = payload["messages"][1]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    # The tool result and the next user text merge into one user turn (turns must alternate).
    last = payload["messages"][2]
    assert last["role"] == "user"
    assert last["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "-3C, snow",
    }
    assert last["content"][1] == {"type": "text", "text": "Thanks, and tomorrow?"}


def test_stop_sequences_sampling_and_json_schema_output_map_across() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    payload = _payload(
        {
            "messages": [{"role": "user", "content": "x"}],
            "stop": "END",
            "temperature": 0.2,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
    )
    assert payload["stop_sequences"] == ["END"]
    assert payload["temperature"] == 0.2
    assert payload["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_image_parts_become_image_blocks() -> None:
    payload = _payload(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ]
        }
    )
    blocks = payload["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert blocks[2]["source"] == {"type": "url", "url": "https://x/y.png"}


def test_the_api_key_goes_in_x_api_key_with_the_version_header() -> None:
    req = AnthropicAdapter().build_request(_lane(), {"messages": []}, "sk-123", stream=True)
    assert req.headers["x-api-key"] == "sk-123"
    assert req.headers["anthropic-version"]
    assert "Authorization" not in req.headers
    assert req.payload["stream"] is True


def test_base_url_with_or_without_v1_reaches_the_messages_endpoint() -> None:
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1/messages"


def test_answers_translate_text_tool_use_stop_reason_and_usage() -> None:
    answer, usage = translate_answer(
        {
            "id": "msg_1",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 7},
        }
    )
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert (usage.input_tokens, usage.output_tokens) == (12, 7)


def test_max_tokens_stop_reason_means_length() -> None:
    answer, _ = translate_answer(
        {"content": [{"type": "text", "text": "cut"}], "stop_reason": "max_tokens"}
    )
    assert answer["choices"][0]["finish_reason"] == "length"


def _chunks(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        data = frame.decode().removeprefix("data: ").strip()
        out.append({"done": True} if data == "[DONE]" else json.loads(data))
    return out


def test_stream_events_become_openai_chunks_including_tool_call_deltas() -> None:
    tr = AnthropicStream(include_usage=True)
    events = [
        {
            "type": "message_start",
            "message": {"id": "m1", "model": "c", "usage": {"input_tokens": 9}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
        },
        {"type": "ping"},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    ]
    chunks = _chunks([f for e in events for f in tr.feed(e["type"], json.dumps(e))])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    opening = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert opening == {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"city":'
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    assert chunks[6] == {"done": True}
    assert tr.done and tr.usage.output_tokens == 5


def test_an_error_event_inside_a_stream_is_raised() -> None:
    tr = AnthropicStream(include_usage=False)
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    try:
        tr.feed("error", json.dumps(event))
    except StreamError as exc:
        assert exc.body == event
    else:
        raise AssertionError("an error event must raise StreamError")


# ---------------------------------------------------------------------------------------------
# Against the simulator, through the sidecar, with the OpenAI SDK as the client.


def _claude_config(sims: dict[str, Any]) -> dict[str, Any]:
    return policy_doc({"claude": lane(sims["claude"].url, api="anthropic")}, {"main": ["claude"]})


async def test_a_plain_chat_completion_is_served_by_an_anthropic_lane() -> None:
    async with running({"claude": "anthropic"}, _claude_config) as (sidecar, _):
        client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused")
        answer = await client.chat.completions.create(
            model="auto",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello"},
            ],
        )
        await client.close()
    assert answer.choices[0].message.content == "[claude] ok: Say hello"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens > 0


async def test_tool_calls_round_trip_through_an_anthropic_lane() -> None:
    async with running({"claude": "anthropic"}, _claude_config) as (sidecar, _):
        client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused")
        messages: list[Any] = [{"role": "user", "content": "Use get_weather for Oslo"}]
        first = await client.chat.completions.create(
            model="main", messages=messages, tools=[WEATHER_TOOL]
        )
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "-3C"})
        second = await client.chat.completions.create(
            model="main", messages=messages, tools=[WEATHER_TOOL]
        )
        await client.close()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


async def test_streamed_anthropic_answers_arrive_as_openai_chunks() -> None:
    async with running({"claude": "anthropic"}, _claude_config) as (sidecar, _):
        client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused")
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Tell me a long story about routers"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        await client.close()
    assert text == "[claude] ok: Tell me a long story about routers"
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens > 0


async def test_streamed_tool_calls_from_an_anthropic_lane_assemble_into_valid_arguments() -> None:
    async with running({"claude": "anthropic"}, _claude_config) as (sidecar, _):
        client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused")
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Use get_weather for Paris"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
        name, arguments = "", ""
        async for chunk in stream:
            for call in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                name += call.function.name or "" if call.function else ""
                arguments += call.function.arguments or "" if call.function else ""
        await client.close()
    assert name == "get_weather"
    assert "city" in json.loads(arguments)
