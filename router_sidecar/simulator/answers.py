"""What the simulated model says: one provider-neutral answer per request and mode.

The wire adapters (`openai_wire`, `anthropic_wire`) turn a provider's request body into a
`SimRequest` and an `Answer` back into that provider's response. This module sits between them,
is pure and deterministic (same request and settings, same answer), and does no I/O.

Token counts are estimated as ceil(characters / 4), at least 1, for prompts and answers alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from router_sidecar.simulator.schema_fill import example_for
from router_sidecar.simulator.settings import Settings

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
UNCERTAIN_PREFIX = "I'm not sure. "
# How much of the last user message the default answer echoes.
ECHO_CHARS = 40

_TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the request offers: its name and the JSON Schema of its arguments."""

    name: str
    parameters: dict[str, object]


@dataclass(frozen=True)
class SimRequest:
    """The parts of a chat request, in any wire format, that shape the simulated answer.

    `tool_choice` is "auto", "none", "required" or the name of the one tool to call.
    `json_mode` is None, "object" (any JSON object) or "schema" (match `json_schema`).
    `after_tool_result` is true when the conversation ends with a tool's result.
    """

    model: str
    last_user_text: str
    prompt_tokens: int
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    json_mode: str | None = None
    json_schema: dict[str, object] | None = None
    after_tool_result: bool = False


@dataclass(frozen=True)
class ToolCall:
    """One tool call; `arguments` is JSON text, deliberately broken in mode `invalid_json`."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    """The simulated model's answer: either `text` or a `tool_call`, and why it stopped.

    `finish` is "stop", "length" (cut off) or "tool" (stopped to call a tool).
    """

    text: str | None
    tool_call: ToolCall | None
    finish: str
    completion_tokens: int


def count_tokens(chars: int) -> int:
    """Estimated tokens for this many characters: ceil(chars / 4), at least 1."""
    return max(1, -(-chars // 4))


def default_text(sim_model: str, last_user_text: str) -> str:
    """The recognisable default answer: the simulator's model name and an echo of the prompt."""
    echo = " ".join(last_user_text.split())[:ECHO_CHARS]
    return f"[{sim_model}] ok: {echo}"


def compose_answer(req: SimRequest, settings: Settings, sim_model: str) -> Answer:
    """The answer for a request that the mode lets through (not an error or a dropped call)."""
    mode = settings.mode
    text = (
        settings.answer
        if settings.answer is not None
        else default_text(sim_model, req.last_user_text)
    )
    if mode == "refuse":
        return _text_answer(REFUSAL_TEXT, "stop")
    if mode == "uncertain":
        text = UNCERTAIN_PREFIX + text

    tool = _tool_to_call(req, settings) if mode != "truncate" else None
    if tool is not None:
        return _tool_answer(tool, text, broken=mode == "invalid_json")

    if req.json_mode is not None:
        text = _json_text(req, text, sim_model, broken=mode == "invalid_json")
    if mode == "truncate":
        return _text_answer(text[: max(1, len(text) // 2)], "length")
    if req.max_tokens is not None and count_tokens(len(text)) > req.max_tokens:
        # The request's own output limit cuts the answer, as a real model's would be.
        return _text_answer(text[: req.max_tokens * 4], "length")
    return _text_answer(text, "stop")


def _text_answer(text: str, finish: str) -> Answer:
    return Answer(
        text=text, tool_call=None, finish=finish, completion_tokens=count_tokens(len(text))
    )


def _tool_answer(tool: ToolSpec, text: str, broken: bool) -> Answer:
    # Tool arguments are always an object, also when the tool declares no parameters.
    arguments = json.dumps(example_for({"type": "object", **tool.parameters}, text))
    if broken:
        # Cut before the closing brace and leave a key open, as a model cut off mid-call does.
        arguments = arguments[:-1] + ', "' if arguments.endswith("}") else "{" + arguments
    call = ToolCall(name=tool.name, arguments=arguments)
    return Answer(
        text=None, tool_call=call, finish="tool", completion_tokens=count_tokens(len(arguments))
    )


def _tool_to_call(req: SimRequest, settings: Settings) -> ToolSpec | None:
    """The tool to call, or None: forced by tool_choice or control, else asked for by the user."""
    if not req.tools or req.tool_choice == "none":
        return None
    named = next((t for t in req.tools if t.name == req.tool_choice), None)
    if named is not None:
        return named
    if req.tool_choice == "required" or settings.tool_call:
        return _mentioned_tool(req) or req.tools[0]
    if req.after_tool_result:
        # The tool has answered; a real model now replies in text instead of calling again.
        return None
    return _mentioned_tool(req) or (req.tools[0] if _TOOL_WORD.search(req.last_user_text) else None)


def _mentioned_tool(req: SimRequest) -> ToolSpec | None:
    lowered = req.last_user_text.lower()
    return next((t for t in req.tools if t.name.lower() in lowered), None)


def _json_text(req: SimRequest, text: str, sim_model: str, broken: bool) -> str:
    if req.json_mode == "schema" and req.json_schema is not None:
        value = example_for(req.json_schema, text)
    else:
        value = {"answer": text, "model": sim_model}
    encoded = json.dumps(value)
    if broken:
        # Chatter before the JSON and a missing closing bracket: never parses.
        return "Sure! Here is the JSON you asked for:\n" + encoded[:-1]
    return encoded
