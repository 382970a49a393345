"""Adapter for the Anthropic Messages API, translated to and from the OpenAI chat shape.

Request (OpenAI -> Messages): system messages become `system`; user and assistant messages keep
their order, with text and image parts as content blocks; assistant `tool_calls` become
`tool_use` blocks and `tool` messages become `tool_result` blocks in a user turn; consecutive
turns of the same role are merged (the Messages API wants them alternating); `tools`,
`tool_choice`, `parallel_tool_calls`, `stop`, `temperature`, `top_p` and the output limit map to
their Messages equivalents (`max_tokens` is required there: the lane's `maxOutputTokens` when the
client sets none). A `response_format` of type `json_schema` becomes structured output
(`output_config.format`); `json_object` has no Messages equivalent and is dropped (the answer
checks still validate JSON answers). A base URL with or without the trailing `/v1` works.

Answer (Messages -> OpenAI): text blocks join into `content`, `tool_use` blocks become
`tool_calls`, stop reasons map (`end_turn`/`stop_sequence` -> `stop`, `max_tokens` -> `length`,
`tool_use` -> `tool_calls`, `refusal` -> `content_filter`), usage maps to prompt/completion tokens.
Streams are translated event by event into `chat.completion.chunk` frames.
Called by `engine.py` through `router_sidecar.providers.adapter_for`.
"""

from __future__ import annotations

import json
import time
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

API_VERSION = "2023-06-01"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


# ---------------------------------------------------------------------------------------------
# Request: OpenAI -> Messages.


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def _image_block(part: Mapping[str, Any]) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        return None
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            block = _image_block(part)
            if block:
                blocks.append(block)
    return blocks


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"_raw": raw}  # keep what the model wrote rather than drop the call


def _assistant_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = _content_blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{len(blocks)}",
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments")),
            }
        )
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id", ""),
        "content": _text_of(message.get("content")),
    }


def translate_messages(messages: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(system text, Messages turns) for an OpenAI `messages` list."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        if role == "assistant":
            target, blocks = "assistant", _assistant_blocks(message)
        elif role == "tool":
            target, blocks = "user", [_tool_result(message)]
        else:
            target, blocks = "user", _content_blocks(message.get("content"))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == target:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": target, "content": blocks})
    return ("\n\n".join(s for s in system if s) or None), turns


def translate_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        entry = {
            "name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def translate_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"type": "none"}
    result: dict[str, Any] | None = None
    if choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        result = {"type": "tool", "name": choice["function"].get("name", "")}
    if parallel is False:
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def build_payload(lane: Lane, body: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    system, turns = translate_messages(body.get("messages"))
    payload: dict[str, Any] = {
        "model": lane.provider.model,
        "messages": turns,
        "max_tokens": clamp_max_tokens(lane, body) or lane.max_output_tokens,
    }
    if system:
        payload["system"] = system
    tools = translate_tools(body.get("tools"))
    if tools:
        payload["tools"] = tools
    choice = translate_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and tools:
        payload["tool_choice"] = choice
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)):
            payload[key] = body[key]
    stop = body.get("stop")
    if isinstance(stop, str):
        payload["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        payload["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    output = _output_format(body.get("response_format"))
    if output is not None:
        payload["output_config"] = {"format": output}
    if stream:
        payload["stream"] = True
    return payload


def _output_format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return {"type": "json_schema", "schema": schema} if isinstance(schema, Mapping) else None


# ---------------------------------------------------------------------------------------------
# Answer: Messages -> OpenAI.


def _usage(obj: Any) -> Usage:
    if not isinstance(obj, Mapping):
        return Usage()
    read = obj.get("input_tokens")
    written = obj.get("output_tokens")
    if isinstance(read, int):
        for extra in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if isinstance(obj.get(extra), int):
                read += obj[extra]
    return Usage(
        input_tokens=read if isinstance(read, int) else None,
        output_tokens=written if isinstance(written, int) else None,
    )


def _openai_usage(usage: Usage) -> dict[str, int]:
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def translate_answer(data: Any) -> tuple[dict[str, Any], Usage]:
    if not isinstance(data, Mapping) or not isinstance(data.get("content"), list):
        raise ValueError("the answer has no 'content' list")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data["content"]:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input", {})),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    usage = _usage(data.get("usage"))
    answer = {
        "id": str(data.get("id") or "msg"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(data.get("model") or ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_REASONS.get(str(data.get("stop_reason")), "stop"),
            }
        ],
        "usage": _openai_usage(usage),
    }
    return answer, usage


# ---------------------------------------------------------------------------------------------
# Streams: Messages events -> OpenAI chunks.


class AnthropicStream(StreamTranslator):
    """Translate Messages stream events into `chat.completion.chunk` frames as they arrive."""

    def __init__(self, include_usage: bool) -> None:
        super().__init__()
        self._include_usage = include_usage
        self._id = "msg"
        self._model = ""
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool_call index

    def _frame(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def feed(self, event: str | None, data: str) -> list[bytes]:
        try:
            obj = fastjson.loads(data)
        except ValueError as exc:
            raise StreamError(f"unreadable stream event: {exc}") from exc
        if not isinstance(obj, dict):
            raise StreamError("stream event is not a JSON object")
        kind = obj.get("type") or event
        handler = getattr(self, "_on_" + str(kind), None)
        return handler(obj) if handler else []  # ping and unknown events carry nothing

    def _on_error(self, obj: dict[str, Any]) -> list[bytes]:
        raise StreamError("the provider reported an error in the stream", obj)

    def _on_message_start(self, obj: dict[str, Any]) -> list[bytes]:
        message = obj.get("message") or {}
        self._id = str(message.get("id") or self._id)
        self._model = str(message.get("model") or "")
        self.usage = _usage(message.get("usage"))
        return [self._frame({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, obj: dict[str, Any]) -> list[bytes]:
        block = obj.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            self.output_chars += len(block["text"])
            return [self._frame({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        index = self._tool_index[obj.get("index", 0)] = len(self._tool_index)
        call = {
            "index": index,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": ""},
        }
        return [self._frame({"tool_calls": [call]})]

    def _on_content_block_delta(self, obj: dict[str, Any]) -> list[bytes]:
        delta = obj.get("delta") or {}
        if delta.get("type") == "text_delta":
            text = delta.get("text", "")
            self.output_chars += len(text)
            return [self._frame({"content": text})]
        if delta.get("type") == "input_json_delta":
            index = self._tool_index.get(obj.get("index", 0), 0)
            part = delta.get("partial_json", "")
            self.output_chars += len(part)
            call = {"index": index, "function": {"arguments": part}}
            return [self._frame({"tool_calls": [call]})]
        return []

    def _on_message_delta(self, obj: dict[str, Any]) -> list[bytes]:
        reason = (obj.get("delta") or {}).get("stop_reason")
        written = (obj.get("usage") or {}).get("output_tokens")
        if isinstance(written, int):
            self.usage.output_tokens = written
        if not reason:
            return []
        self.finish_reason = STOP_REASONS.get(reason, "stop")
        return [self._frame({}, self.finish_reason)]

    def _on_message_stop(self, obj: dict[str, Any]) -> list[bytes]:
        self.done = True
        frames = []
        if self._include_usage:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": _openai_usage(self.usage),
            }
            frames.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        frames.append(DONE_FRAME)
        return frames


def messages_url(base_url: str) -> str:
    """`https://api.anthropic.com` and `https://api.anthropic.com/v1` both mean the same API."""
    base = base_url.rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


class AnthropicAdapter(ProviderAdapter):
    type = "anthropic"

    def build_request(
        self, lane: Lane, body: Mapping[str, Any], api_key: str | None, *, stream: bool
    ) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return UpstreamRequest(
            messages_url(lane.provider.base_url), headers, build_payload(lane, body, stream=stream)
        )

    def parse_answer(self, data: Any) -> tuple[dict[str, Any], Usage]:
        return translate_answer(data)

    def stream_translator(self, *, include_usage: bool) -> StreamTranslator:
        return AnthropicStream(include_usage)
