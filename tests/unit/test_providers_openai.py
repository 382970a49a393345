"""The OpenAI-compatible adapter: pass-through with the lane's model, limits and usage."""

from __future__ import annotations

import json

import pytest

from router_sidecar.config import Lane, Provider
from router_sidecar.providers.base import DONE_FRAME, StreamError
from router_sidecar.providers.openai import OpenAIAdapter, OpenAIStream, answer_chars


def _lane() -> Lane:
    return Lane(
        name="mini",
        provider=Provider("openai", "http://127.0.0.1:9/v1", "gpt-mini", None),
        input_per_million=1,
        output_per_million=2,
        context_window=128_000,
        max_output_tokens=1000,
        capabilities=frozenset({"streaming"}),
        connect_ms=1000,
        first_token_ms=1000,
        total_ms=1000,
    )


def test_the_body_passes_through_with_the_lanes_model_and_capped_output() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000,
            "temperature": 0.1, "seed": 7}
    req = OpenAIAdapter().build_request(_lane(), body, "sk-1", stream=False)
    assert req.url == "http://127.0.0.1:9/v1/chat/completions"
    assert req.payload["model"] == "gpt-mini"
    assert req.payload["max_tokens"] == 1000
    assert req.payload["seed"] == 7 and req.payload["temperature"] == 0.1
    assert req.headers["Authorization"] == "Bearer sk-1"
    assert body["model"] == "auto"  # the client's body is not modified


def test_a_lane_without_a_key_sends_no_authorization_header() -> None:
    req = OpenAIAdapter().build_request(_lane(), {"messages": []}, None, stream=False)
    assert "Authorization" not in req.headers


def test_streams_ask_for_usage_but_hide_the_usage_chunk_unless_the_client_asked() -> None:
    req = OpenAIAdapter().build_request(_lane(), {"messages": []}, None, stream=True)
    assert req.payload["stream_options"] == {"include_usage": True}

    usage_chunk = json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    hidden = OpenAIStream(include_usage=False)
    assert hidden.feed(None, usage_chunk) == []
    assert (hidden.usage.input_tokens, hidden.usage.output_tokens) == (3, 4)
    shown = OpenAIStream(include_usage=True)
    assert shown.feed(None, usage_chunk) == [b"data: " + usage_chunk.encode() + b"\n\n"]


def test_stream_chunks_pass_through_unchanged_and_done_ends_the_stream() -> None:
    tr = OpenAIStream(include_usage=False)
    chunk = '{"choices":[{"index":0,"delta":{"content":"hey"},"finish_reason":"stop"}]}'
    assert tr.feed(None, chunk) == [b"data: " + chunk.encode() + b"\n\n"]
    assert tr.finish_reason == "stop" and tr.output_chars == 3
    assert tr.feed(None, "[DONE]") == [DONE_FRAME] and tr.done


def test_an_error_object_in_a_stream_raises() -> None:
    with pytest.raises(StreamError):
        OpenAIStream(include_usage=False).feed(None, '{"error": {"message": "boom"}}')


def test_an_answer_without_choices_is_unreadable() -> None:
    with pytest.raises(ValueError):
        OpenAIAdapter().parse_answer({"id": "x"})
    _, usage = OpenAIAdapter().parse_answer(
        {"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": 1}}
    )
    assert usage.input_tokens == 1 and usage.output_tokens is None


def test_streamed_and_whole_answers_count_text_and_tool_arguments_alike() -> None:
    call = {"index": 0, "function": {"name": "f", "arguments": '{"a": 1}'}}
    delta = {"content": "hi", "tool_calls": [call, "not a call"]}
    tr = OpenAIStream(include_usage=False)
    tr.feed(None, json.dumps({"choices": [{"index": 0, "delta": delta}, "junk"]}))
    answer = {"choices": [{"index": 0, "message": delta}]}
    assert tr.output_chars == answer_chars(answer) == len("hi") + len('{"a": 1}')
