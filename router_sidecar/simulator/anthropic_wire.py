"""The Anthropic Messages wire format for the simulated provider (`--api anthropic`).

Implements `wire.WireFormat`: reads `POST /v1/messages` bodies (top-level `system`, content
blocks, tools with `input_schema`, required `max_tokens` and `anthropic-version` header), writes
`message` responses, the `message_start` ... `message_stop` event stream, and errors shaped
`{"type": "error", "error": {"type", "message"}}`. `server.SimulatedProvider` picks it for
`api="anthropic"`.
"""

from __future__ import annotations

import hmac
import itertools
import json
import secrets
from collections.abc import Mapping
from typing import Any

from router_sidecar.simulator.answers import Answer, SimRequest, ToolSpec, count_tokens
from router_sidecar.simulator.wire import RequestInvalid, dumps, split_text

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}

# kind -> (status, error type, stock message)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "bad_request": (400, "invalid_request_error", "Invalid request."),
    "not_found": (404, "not_found_error", "Not found"),
    "server": (500, "api_error", "Internal server error"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "ratelimit": (
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. Please reduce the prompt length or the maximum tokens requested, or try again "
        "later.",
    ),
}


class AnthropicWire:
    """Anthropic's Messages API, as served by `laneway simulate-provider --api anthropic`."""

    api = "anthropic"
    chat_path = "/v1/messages"
    request_id_header = "request-id"
    default_context_window = 200_000

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return hmac.compare_digest(headers.get("x-api-key", "").encode(), api_key.encode())

    def new_id(self) -> str:
        return f"msg_sim{self._prefix}{next(self._ids):012x}"

    def parse(self, body: Any, headers: Mapping[str, str]) -> SimRequest:
        if "anthropic-version" not in headers:
            raise RequestInvalid("anthropic-version: header is required")
        if not isinstance(body, dict):
            raise RequestInvalid("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestInvalid("model: Field required")
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestInvalid(
                "max_tokens: Field required"
                if max_tokens is None
                else "max_tokens: Input should be a positive integer"
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestInvalid("messages: at least one message is required")

        chars, last_user, after_tool = _read_messages(messages)
        chars += len(_system_text(body.get("system")))
        tools = _tools(body.get("tools"))
        if tools:
            chars += len(json.dumps(body["tools"]))
        schema = _output_schema(body)
        return SimRequest(
            model=model,
            last_user_text=last_user,
            prompt_tokens=count_tokens(chars),
            stream=body.get("stream") is True,
            include_usage=True,
            max_tokens=max_tokens,
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice")),
            json_mode="schema" if schema is not None else None,
            json_schema=schema,
            after_tool_result=after_tool,
        )

    def render(self, req: SimRequest, answer: Answer, response_id: str) -> bytes:
        return dumps(
            {
                "id": response_id,
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": [_block(response_id, answer, full=True)],
                "stop_reason": _STOP[answer.finish],
                "stop_sequence": None,
                "usage": {
                    "input_tokens": req.prompt_tokens,
                    "output_tokens": answer.completion_tokens,
                },
            }
        )

    def stream_events(self, req: SimRequest, answer: Answer, response_id: str) -> list[bytes]:
        start = {
            "id": response_id,
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": req.prompt_tokens, "output_tokens": 1},
        }
        events = [
            _event("message_start", {"type": "message_start", "message": start}),
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": _block(response_id, answer, full=False),
                },
            ),
            _event("ping", {"type": "ping"}),
        ]
        events.extend(_event("content_block_delta", d) for d in _deltas(answer))
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        finish = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[answer.finish], "stop_sequence": None},
            "usage": {"output_tokens": answer.completion_tokens},
        }
        events.append(_event("message_delta", finish))
        events.append(_event("message_stop", {"type": "message_stop"}))
        return events

    def stream_error_event(self) -> bytes:
        return _event(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )

    def error(
        self, kind: str, message: str | None = None, param: str | None = None
    ) -> tuple[int, bytes]:
        status, error_type, stock = _ERRORS[kind]
        return status, dumps(
            {"type": "error", "error": {"type": error_type, "message": message or stock}}
        )

    def context_error(self, prompt_tokens: int, limit: int) -> tuple[int, bytes]:
        message = f"prompt is too long: {prompt_tokens} tokens > {limit} maximum"
        return 400, dumps(
            {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        )

    def models(self, model: str) -> bytes:
        entry = {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
        }
        return dumps({"data": [entry], "has_more": False, "first_id": model, "last_id": model})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def _read_messages(messages: list[Any]) -> tuple[int, str, bool]:
    """Characters in all messages, the last user-written text, and whether it ends in a tool result.

    A user message that only carries tool results is not user-written text, so the echo stays on
    the question, as it does for OpenAI's separate `tool` messages.
    """
    chars = 0
    last_user = ""
    after_tool = False
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise RequestInvalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        written, other, has_tool_result = _content_text(message.get("content"))
        chars += len(written) + len(other)
        if role == "user" and (written or not has_tool_result):
            last_user = written
        after_tool = role == "user" and has_tool_result
    return chars, last_user, after_tool


def _content_text(content: Any) -> tuple[str, str, bool]:
    """A message's own text, the text of its tool calls and results, and whether it has results."""
    if isinstance(content, str):
        return content, "", False
    if not isinstance(content, list):
        return "", "", False
    written: list[str] = []
    other: list[str] = []
    has_tool_result = False
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            written.append(str(block.get("text", "")))
        elif kind == "tool_use":
            other.append(json.dumps(block.get("input", {})))
        elif kind == "tool_result":
            has_tool_result = True
            other.append("".join(_content_text(block.get("content"))[:2]))
    return "\n".join(written), "".join(other), has_tool_result


def _system_text(system: Any) -> str:
    return _content_text(system)[0]


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if not isinstance(raw, list):
        return ()
    specs = []
    for index, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise RequestInvalid(f"tools.{index}.name: Field required")
        if "input_schema" not in tool:
            # Server-side tools (web search and the like) have no schema for the client to fill.
            continue
        schema = tool["input_schema"]
        specs.append(ToolSpec(tool["name"], schema if isinstance(schema, dict) else {}))
    return tuple(specs)


def _tool_choice(raw: Any) -> str:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "any":
        return "required"
    if kind == "tool":
        return str(raw.get("name", "auto"))
    if kind == "none":
        return "none"
    return "auto"


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output schema: `output_config.format`, or the older `output_format`."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise RequestInvalid("output_config.format.schema: Field required")
        return schema
    return None


def _block(response_id: str, answer: Answer, full: bool) -> dict[str, Any]:
    """The answer's content block; `full=False` gives the empty block that opens a stream."""
    if answer.tool_call is None:
        return {"type": "text", "text": answer.text if full else ""}
    return {
        "type": "tool_use",
        "id": "toolu_" + response_id[-20:],
        "name": answer.tool_call.name,
        "input": _tool_input(answer.tool_call.arguments) if full else {},
    }


def _tool_input(arguments: str) -> Any:
    # Anthropic always sends parseable tool input; a broken call arrives as an empty object,
    # which misses every required argument.
    try:
        return json.loads(arguments)
    except ValueError:
        return {}


def _deltas(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_call is None:
        return [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in split_text(answer.text or "")
        ]
    arguments = json.dumps(_tool_input(answer.tool_call.arguments))
    return [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": p},
        }
        for p in split_text(arguments)
    ]
