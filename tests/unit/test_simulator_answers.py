"""The simulated model's answers as pure functions: schema filling, modes, token counts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from router_sidecar.simulator.answers import (
    SimRequest,
    ToolSpec,
    compose_answer,
    count_tokens,
)
from router_sidecar.simulator.anthropic_wire import AnthropicWire
from router_sidecar.simulator.openai_wire import OpenAIWire
from router_sidecar.simulator.schema_fill import example_for
from router_sidecar.simulator.settings import MODES, Settings
from router_sidecar.simulator.wire import RequestInvalid, WireFormat, split_text

REQ = SimRequest(model="m", last_user_text="  what is   the capital\nof France? ", prompt_tokens=9)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"type": "object", "properties": {"n": {"type": ["integer", "null"], "minimum": 3}}},
        {"type": "array", "items": {"type": "number"}, "minItems": 3},
        {"type": "array", "items": {"type": "string"}, "maxItems": 0},
        {"type": "string", "minLength": 80},
        {"type": "string", "maxLength": 3},
        {"const": "fixed"},
        {"enum": [7, 8]},
        {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
        {"allOf": [{"type": "object", "properties": {"x": {"type": "integer"}}}]},
        {
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"$ref": "#/definitions/item"}}},
            "definitions": {
                "item": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
                    "required": ["id", "ok"],
                    "additionalProperties": False,
                }
            },
            "required": ["items"],
        },
    ],
)
def test_example_values_satisfy_their_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_for(schema, "some text"), schema)


def test_a_self_referencing_schema_ends_instead_of_recursing_forever() -> None:
    schema = {"$ref": "#/$defs/node", "$defs": {"node": {"properties": {"next": {"$ref": "#"}}}}}

    value = example_for(schema, "t")

    assert isinstance(value, dict)


def test_the_default_answer_echoes_forty_characters_with_whitespace_collapsed() -> None:
    answer = compose_answer(REQ, Settings(), "sim")

    assert answer.text == "[sim] ok: what is the capital of France?"
    assert answer.finish == "stop"
    assert answer.completion_tokens == count_tokens(len(answer.text))


def test_answers_are_deterministic() -> None:
    tools = (ToolSpec("lookup", {"type": "object", "properties": {"q": {"type": "string"}}}),)
    req = SimRequest(model="m", last_user_text="use lookup", prompt_tokens=3, tools=tools)

    assert compose_answer(req, Settings(), "s") == compose_answer(req, Settings(), "s")


def test_truncate_with_a_tool_request_answers_in_cut_off_text() -> None:
    tools = (ToolSpec("lookup", {}),)
    req = SimRequest(model="m", last_user_text="use the tool", prompt_tokens=3, tools=tools)

    answer = compose_answer(req, Settings(mode="truncate"), "s")

    assert answer.tool_call is None
    assert answer.finish == "length"


def test_invalid_json_tool_arguments_never_parse_even_for_empty_schemas() -> None:
    req = SimRequest(
        model="m",
        last_user_text="x",
        prompt_tokens=1,
        tools=(ToolSpec("t", {}),),
        tool_choice="required",
    )

    answer = compose_answer(req, Settings(mode="invalid_json"), "s")

    assert answer.tool_call is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.tool_call.arguments)


@pytest.mark.parametrize(("chars", "tokens"), [(0, 1), (1, 1), (4, 1), (5, 2), (400, 100)])
def test_tokens_are_characters_over_four_rounded_up(chars: int, tokens: int) -> None:
    assert count_tokens(chars) == tokens


@pytest.mark.parametrize(
    "text", ["", "short", "a much longer answer that needs several pieces", "x" * 50]
)
def test_stream_pieces_join_back_into_the_text(text: str) -> None:
    pieces = split_text(text)

    assert "".join(pieces) == text
    assert all(len(p) <= 12 for p in pieces)


# Words that steer the parsers and the schema filler down their interesting branches.
_WORDS = [
    "type",
    "object",
    "string",
    "array",
    "integer",
    "number",
    "boolean",
    "null",
    "properties",
    "items",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "#/$defs/x",
    "$defs",
    "x",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "required",
    "model",
    "messages",
    "role",
    "user",
    "assistant",
    "tool",
    "content",
    "text",
    "tool_use",
    "tool_result",
    "input",
    "tools",
    "function",
    "name",
    "parameters",
    "input_schema",
    "tool_choice",
    "any",
    "auto",
    "none",
    "required",
    "response_format",
    "json_object",
    "json_schema",
    "schema",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "system",
    "output_config",
    "format",
]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(_WORDS),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_WORDS), inner, max_size=4)
    ),
    max_leaves=25,
)


_TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "name": st.sampled_from(["get_weather", "lookup"]),
        "input_schema": _JSON,
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "lookup"]), "parameters": _JSON}
        ),
    }
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "user", "assistant", "tool"])},
    optional={
        "content": st.sampled_from(["use the tool", "call lookup", "hi"]) | _JSON,
        "tool_calls": _JSON,
    },
)
# Requests that pass the first checks, with every optional field possibly malformed.
_BODY = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "messages": st.lists(_MESSAGE, min_size=1, max_size=3),
        "max_tokens": st.integers(1, 40),
        "tools": st.lists(_TOOL, min_size=1, max_size=2) | _JSON,
        "tool_choice": st.sampled_from(
            ["auto", "required", {"type": "any"}, {"type": "tool", "name": "lookup"}]
        )
        | _JSON,
    },
    optional={
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["json_object", "json_schema"]), "json_schema": _JSON}
        ),
        "output_config": st.fixed_dictionaries(
            {"format": st.fixed_dictionaries({"type": st.just("json_schema"), "schema": _JSON})}
        ),
        "stream": _JSON,
        "stream_options": _JSON,
        "system": _JSON,
    },
)


@settings(max_examples=100, database=None, deadline=None)
@given(schema=_JSON)
@example(schema={"minLength": -9.223372036854778e18})  # past a C ssize_t, once an OverflowError
@example(schema={"type": "string", "maxLength": -1e300, "minLength": 1e300})
def test_any_schema_yields_a_json_value_without_raising(schema: Any) -> None:
    json.dumps(example_for(schema, "text"))


@settings(max_examples=100, database=None, deadline=None)
@given(body=_BODY, mode=st.sampled_from(MODES))
@pytest.mark.parametrize("wire", [OpenAIWire(), AnthropicWire()], ids=["openai", "anthropic"])
def test_a_malformed_request_is_rejected_or_answered_never_crashes(
    wire: WireFormat, body: dict[str, Any], mode: str
) -> None:
    try:
        req = wire.parse(body, {"anthropic-version": "2023-06-01"})
    except RequestInvalid:
        return

    answer = compose_answer(req, Settings(mode=mode), "sim")
    json.loads(wire.render(req, answer, wire.new_id()))
    assert wire.stream_events(req, answer, wire.new_id())
