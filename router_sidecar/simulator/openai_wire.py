"""The OpenAI Chat Completions wire format for the simulated provider (`--api openai`).

Implements `wire.WireFormat`: reads `POST /v1/chat/completions` bodies, writes
`chat.completion` responses, `chat.completion.chunk` server-sent events ending in
`data: [DONE]`, and errors shaped `{"error": {"message", "type", "param", "code"}}`.
`server.SimulatedProvider` picks it for `api="openai"`.
"""

from __future__ import annotations

import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from router_sidecar.simulator.answers import Answer, SimRequest, ToolSpec, count_tokens
from router_sidecar.simulator.wire import RequestInvalid, dumps, split_text

_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
_FINGERPRINT = "fp_laneway_sim"

# kind -> (status, type, code, stock message)
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "auth": (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key in your account settings.",
    ),
    "bad_request": (400, "invalid_request_error", None, "Invalid request."),
    "not_found": (404, "invalid_request_error", None, "Invalid URL."),
    "server": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": (
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
    ),
    "ratelimit": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 60, Used 60, Requested 1. "
        "Please try again in 1s.",
    ),
}


class OpenAIWire:
    """OpenAI's Chat Completions API, as served by `laneway simulate-provider --api openai`."""

    api = "openai"
    chat_path = "/v1/chat/completions"
    request_id_header = "x-request-id"
    default_context_window = 128_000

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        given = headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())

    def new_id(self) -> str:
        return f"chatcmpl-sim{self._prefix}{next(self._ids):08x}"

    def parse(self, body: Any, headers: Mapping[str, str]) -> SimRequest:
        if not isinstance(body, dict):
            raise RequestInvalid("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestInvalid("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestInvalid("Missing required parameter: 'messages'.", "messages")

        chars, last_user = _read_messages(messages)
        tools = _tools(body.get("tools"))
        if tools:
            chars += len(json.dumps(body["tools"]))
        json_mode, schema = _response_format(body.get("response_format"))
        stream_options = body.get("stream_options")
        return SimRequest(
            model=model,
            last_user_text=last_user,
            prompt_tokens=count_tokens(chars),
            stream=body.get("stream") is True,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
            max_tokens=_max_tokens(body),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice")),
            json_mode=json_mode,
            json_schema=schema,
            after_tool_result=messages[-1].get("role") == "tool",
        )

    def render(self, req: SimRequest, answer: Answer, response_id: str) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool_call is not None:
            message["tool_calls"] = [
                _tool_call_json(response_id, answer, answer.tool_call.arguments)
            ]
        return dumps(
            {
                "id": response_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _FINISH[answer.finish],
                    }
                ],
                "usage": _usage(req, answer),
                "system_fingerprint": _FINGERPRINT,
            }
        )

    def stream_events(self, req: SimRequest, answer: Answer, response_id: str) -> list[bytes]:
        head = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": _FINGERPRINT,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            body: dict[str, Any] = {**head, "choices": [choice]}
            if req.include_usage:
                body["usage"] = None
            return b"data: " + dumps(body) + b"\n\n"

        events = [chunk(delta) for delta in _deltas(response_id, answer)]
        events.append(chunk({}, _FINISH[answer.finish]))
        if req.include_usage:
            usage = {**head, "choices": [], "usage": _usage(req, answer)}
            events.append(b"data: " + dumps(usage) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def stream_error_event(self) -> bytes:
        _, body = self.error("server")
        return b"data: " + body + b"\n\n"

    def error(
        self, kind: str, message: str | None = None, param: str | None = None
    ) -> tuple[int, bytes]:
        status, kind_type, code, stock = _ERRORS[kind]
        body = {"message": message or stock, "type": kind_type, "param": param, "code": code}
        return status, dumps({"error": body})

    def context_error(self, prompt_tokens: int, limit: int) -> tuple[int, bytes]:
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
        body = {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
        return 400, dumps({"error": body})

    def models(self, model: str) -> bytes:
        entry = {
            "id": model,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": "laneway-sim",
        }
        return dumps({"object": "list", "data": [entry]})


def _read_messages(messages: list[Any]) -> tuple[int, str]:
    """Characters in every message and the text of the last user message."""
    chars = 0
    last_user = ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestInvalid(
                f"Invalid type for 'messages[{index}]': expected an object with a 'role'.",
                f"messages[{index}]",
            )
        text = _text_of(message.get("content"))
        chars += len(text)
        chars += sum(len(_arguments_of(call)) for call in _list(message.get("tool_calls")))
        if message["role"] == "user":
            last_user = text
    return chars, last_user


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text", "") for p in content if isinstance(p, dict))
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _arguments_of(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return arguments if isinstance(arguments, str) else ""


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if not isinstance(raw, list):
        return ()
    specs = []
    for index, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestInvalid(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                f"tools[{index}].function.name",
            )
        parameters = function.get("parameters")
        specs.append(ToolSpec(function["name"], parameters if isinstance(parameters, dict) else {}))
    return tuple(specs)


def _tool_choice(raw: Any) -> str:
    if raw in ("none", "auto", "required"):
        return str(raw)
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        return str(raw["function"].get("name", "auto"))
    return "auto"


def _response_format(raw: Any) -> tuple[str | None, dict[str, Any] | None]:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "json_object":
        return "object", None
    if kind != "json_schema":
        return None, None
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise RequestInvalid(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
        )
    return "schema", spec.get("schema", {})


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestInvalid(
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1.", key
            )
        return value
    return None


def _usage(req: SimRequest, answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": req.prompt_tokens + answer.completion_tokens,
    }


def _tool_call_json(response_id: str, answer: Answer, arguments: str) -> dict[str, Any]:
    assert answer.tool_call is not None
    return {
        "id": "call_" + response_id[-16:],
        "type": "function",
        "function": {"name": answer.tool_call.name, "arguments": arguments},
    }


def _deltas(response_id: str, answer: Answer) -> list[dict[str, Any]]:
    """The chunk deltas before the final one: the role, then the text or the tool call."""
    if answer.tool_call is not None:
        opening = {**_tool_call_json(response_id, answer, ""), "index": 0}
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [opening]}
        ]
        for piece in split_text(answer.tool_call.arguments):
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        return deltas
    deltas = [{"role": "assistant", "content": "", "refusal": None}]
    deltas.extend({"content": piece} for piece in split_text(answer.text or ""))
    return deltas
