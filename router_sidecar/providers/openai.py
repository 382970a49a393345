"""Adapter for OpenAI-compatible chat completion APIs (OpenAI, vLLM, Ollama, TGI, gateways).

The client already speaks this shape, so the body passes through with the lane's model name and
output limit; the answer and the stream come back unchanged. Streams ask the provider for a usage
chunk so the router can count tokens and cost; that chunk is passed on only if the client asked
for it too. Called by `engine.py` through `router_sidecar.providers.adapter_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router_sidecar import fastjson
from router_sidecar.config import Lane
from router_sidecar.providers.base import (
    DONE_FRAME,
    ProviderAdapter,
    StreamError,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    clamp_max_tokens,
)


def _usage(obj: Any) -> Usage:
    # Parsed JSON holds dicts: checking for dict first skips the slow Mapping ABC check.
    if not isinstance(obj, (dict, Mapping)):
        return Usage()
    prompt, completion = obj.get("prompt_tokens"), obj.get("completion_tokens")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
    )


def _content_chars(choices: Any) -> int:
    """Characters of text and tool-call arguments in a chunk's deltas or an answer's messages."""
    if not isinstance(choices, list):
        return 0
    return sum(_choice_chars(choice) for choice in choices if isinstance(choice, dict))


def _choice_chars(choice: dict[str, Any]) -> int:
    # Parsed JSON holds dicts and lists: checking for those exactly is much cheaper than
    # checking for the Mapping ABC, and this runs for every chunk of every stream.
    part = choice.get("delta") or choice.get("message")
    if not isinstance(part, dict):
        return 0
    content = part.get("content")
    total = len(content) if isinstance(content, str) else 0
    calls = part.get("tool_calls")
    return total + _call_chars(calls) if calls else total


def _call_chars(calls: Any) -> int:
    total = 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            total += len(function["arguments"])
    return total


class OpenAIStream(StreamTranslator):
    """Pass OpenAI chunks through as they are, noting usage and the finish reason."""

    def __init__(self, include_usage: bool) -> None:
        super().__init__()
        self._include_usage = include_usage

    def feed(self, event: str | None, data: str) -> list[bytes]:
        if data == "[DONE]":
            self.done = True
            return [DONE_FRAME]
        try:
            chunk = fastjson.loads(data)
        except ValueError as exc:
            raise StreamError(f"unreadable stream chunk: {exc}") from exc
        if not isinstance(chunk, dict):
            raise StreamError("stream chunk is not a JSON object")
        if "error" in chunk:
            raise StreamError("the provider reported an error in the stream", chunk)
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                # _choice_chars, inlined for the usual delta: this runs for every chunk.
                part = choice.get("delta") or choice.get("message")
                if isinstance(part, dict):
                    content = part.get("content")
                    if isinstance(content, str):
                        self.output_chars += len(content)
                    if part.get("tool_calls"):
                        self.output_chars += _call_chars(part["tool_calls"])
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
            if not choices and not self._include_usage:
                return []  # the usage-only chunk the router asked for, not the client
        return [b"data: " + data.encode() + b"\n\n"]


class OpenAIAdapter(ProviderAdapter):
    type = "openai"

    def build_request(
        self, lane: Lane, body: Mapping[str, Any], api_key: str | None, *, stream: bool
    ) -> UpstreamRequest:
        payload = dict(body)
        payload["model"] = lane.provider.model
        limit = clamp_max_tokens(lane, body)
        if limit is not None:
            key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            payload[key] = limit
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            payload["stream_options"] = options
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = "Bearer " + api_key
        return UpstreamRequest(lane.provider.base_url + "/chat/completions", headers, payload)

    def parse_answer(self, data: Any) -> tuple[dict[str, Any], Usage]:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ValueError("the answer has no 'choices' list")
        if not data["choices"]:
            raise ValueError("the answer's 'choices' list is empty")
        return data, _usage(data.get("usage"))

    def stream_translator(self, *, include_usage: bool) -> StreamTranslator:
        return OpenAIStream(include_usage)


def answer_chars(answer: Mapping[str, Any]) -> int:
    """Characters of output in an OpenAI answer, for estimating tokens when usage is missing."""
    return _content_chars(answer.get("choices"))
