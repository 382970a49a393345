"""Escalation triggers judged on a finished answer, and refusal detection."""

from __future__ import annotations

import json

import pytest

from router_sidecar.checks import check_answer, escalation_target, is_refusal
from router_sidecar.config import ESCALATION_TRIGGERS
from router_sidecar.signals import Hints
from tests.unit.routing_fixtures import WEATHER_TOOL, build, chat, guide_policy, signals_for

# The answer checks: selfCheck is a call to a lane, made by the engine (test_engine_escalation).
ANSWER_CHECKS = tuple(t for t in ESCALATION_TRIGGERS if t != "selfCheck")


def policy(triggers=ANSWER_CHECKS, markers=("I'm not sure",), **escalation):
    doc = guide_policy()
    doc["escalation"].update(
        {"triggers": list(triggers), "uncertaintyMarkers": list(markers), **escalation}
    )
    return build(doc)


ALL = policy()


def answer(content="Here you go.", finish="stop", tool_calls=None, **message):
    msg = {"role": "assistant", "content": content, **message}
    if tool_calls is not None:
        msg["tool_calls"] = tool_calls
    return {"choices": [{"index": 0, "message": msg, "finish_reason": finish}]}


def call(name, arguments):
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


NO_HINTS = Hints()


def check(body, ans, config=ALL, hints=NO_HINTS, elapsed_ms=100.0):
    sig = signals_for("q", hints, **{k: v for k, v in body.items() if k != "messages"})
    return check_answer(config, body, ans, sig, elapsed_ms)


PERSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}


def test_a_good_answer_sets_off_no_trigger():
    assert check(chat("q"), answer()) is None


# --- schemaInvalid ---------------------------------------------------------------------------


def test_json_object_answers_must_parse():
    body = chat("q", response_format={"type": "json_object"})
    assert check(body, answer('{"a": 1}')) is None
    trigger, detail = check(body, answer("{'a': 1"))
    assert trigger == "schemaInvalid"
    assert detail == "response_format is json_object but the answer is not valid JSON"


def test_json_schema_answers_must_validate_without_quoting_the_answer():
    body = chat("q", response_format=PERSON_SCHEMA)
    assert check(body, answer(json.dumps({"name": "Ada", "age": 36}))) is None
    trigger, detail = check(body, answer(json.dumps({"name": "Ada", "age": "thirty-six"})))
    assert trigger == "schemaInvalid"
    assert "$.age" in detail and "type" in detail
    assert "thirty-six" not in detail
    assert check(body, answer(json.dumps({"name": "Ada"})))[0] == "schemaInvalid"


def test_a_plain_text_request_is_not_schema_checked():
    assert check(chat("q"), answer("not json at all")) is None


# --- toolCallInvalid -------------------------------------------------------------------------


TOOLS_BODY = chat("weather?", tools=[WEATHER_TOOL])


def test_valid_tool_calls_pass():
    ans = answer(None, "tool_calls", [call("get_weather", '{"city": "Oslo"}')])
    assert check(TOOLS_BODY, ans) is None


@pytest.mark.parametrize(
    ("name", "arguments", "detail"),
    [
        ("get_time", "{}", "a tool call names 'get_time', which the request did not offer"),
        ("get_weather", '{"city": ', "the arguments of the call to 'get_weather' are not valid"),
        ("get_weather", '{"city": 5}', "do not match its parameters at $.city"),
        ("get_weather", "", "do not match its parameters at $: fails required"),
    ],
)
def test_bad_tool_calls_set_off_tool_call_invalid(name, arguments, detail):
    trigger, text = check(TOOLS_BODY, answer(None, "tool_calls", [call(name, arguments)]))
    assert trigger == "toolCallInvalid"
    assert detail in text


def test_legacy_function_calls_are_checked_too():
    body = chat("q", functions=[{"name": "lookup", "parameters": {"type": "object"}}])
    ans = answer(None, "function_call", function_call={"name": "other", "arguments": "{}"})
    assert check(body, ans)[0] == "toolCallInvalid"


# --- truncated -------------------------------------------------------------------------------


def test_finish_reason_length_is_truncated():
    assert check(chat("q"), answer("Half an ans", "length"))[0] == "truncated"


def test_an_empty_answer_without_tool_calls_is_truncated():
    assert check(chat("q"), answer("   "))[0] == "truncated"
    assert check(chat("q"), {"choices": []})[0] == "truncated"


# --- uncertain -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["I'm not sure. It could be 4.", "Hmm, I’M NOT SURE about that.", "i'm not sure"]
)
def test_an_uncertainty_marker_anywhere_in_the_answer_is_uncertain(content):
    trigger, detail = check(chat("q"), answer(content))
    assert trigger == "uncertain"
    assert detail == "the answer contains the uncertainty marker \"I'm not sure\""


def test_a_policy_without_markers_uses_the_built_in_ones():
    assert check(chat("q"), answer("I don't know."), policy(markers=()))[0] == "uncertain"


# --- latencyBudgetExceeded -------------------------------------------------------------------


def test_latency_over_the_request_hint_is_exceeded():
    hints = Hints(latency_budget_ms=500)
    assert check(chat("q"), answer(), hints=hints, elapsed_ms=499) is None
    trigger, detail = check(chat("q"), answer(), hints=hints, elapsed_ms=750)
    assert trigger == "latencyBudgetExceeded"
    assert detail == "the answer took 750 ms, over the 500 ms budget (x-laneway-latency-budget-ms)"


def test_latency_falls_back_to_the_policy_budget():
    assert check(chat("q"), answer(), elapsed_ms=20_000) is None
    trigger, detail = check(chat("q"), answer(), elapsed_ms=20_001)
    assert trigger == "latencyBudgetExceeded"
    assert detail.endswith("(latencyBudgetMs)")


# --- refusal ---------------------------------------------------------------------------------

REFUSAL = "I'm sorry, but I can't help with that."


@pytest.mark.parametrize(("risk", "fires"), [(None, True), ("low", True), ("high", False)])
def test_a_refusal_escalates_only_on_low_risk_or_unstated_risk(risk, fires):
    result = check(chat("q"), answer(REFUSAL), hints=Hints(risk=risk))
    assert (result is not None and result[0] == "refusal") is fires


def test_the_refusal_field_and_content_filter_count_as_refusals():
    assert check(chat("q"), answer(None, refusal="No."))[0] == "refusal"
    assert check(chat("q"), answer("", "content_filter"))[0] == "truncated"
    only_refusal = policy(triggers=("refusal",))
    assert check(chat("q"), answer("", "content_filter"), only_refusal)[0] == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        REFUSAL,
        "I can't assist with that request.",
        "Sorry, I cannot provide that information.",
        "I’m unable to help with this.",
        "Unfortunately, I won't be able to do that.",
        "As an AI language model, I cannot write that.",
        "I must decline.",
        "  We are not able to share internal data.",
    ],
)
def test_refusals_are_recognised(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is the summary.",
        "I can't wait to help you with that.",
        "I cannot determine the answer from this data.",
        "The function returns None. I can't help noticing the typo, though.",
        "Here is how: first, I can't stress enough that you must back up. I can't help more.",
        "",
    ],
)
def test_ordinary_answers_are_not_refusals(text):
    assert not is_refusal(text)


# --- which triggers fire ---------------------------------------------------------------------


def test_only_triggers_listed_in_the_policy_fire():
    only_truncated = policy(triggers=("truncated",))
    assert check(chat("q"), answer("I'm not sure."), only_truncated) is None
    assert check(chat("q"), answer("cut", "length"), only_truncated)[0] == "truncated"
    assert check(chat("q"), answer("", "length"), policy(triggers=())) is None


def test_the_first_trigger_in_the_documented_order_is_reported():
    body = chat("q", response_format={"type": "json_object"})
    ans = answer("I'm not sure {", "length")
    assert check(body, ans)[0] == "schemaInvalid"
    assert check(body, ans, policy(triggers=("uncertain", "truncated")))[0] == "truncated"


def test_escalation_target_follows_the_policy_path():
    assert escalation_target(ALL, "fast") == "strong"
    assert escalation_target(ALL, "strong") == "premium"
    assert escalation_target(ALL, "premium") is None


def test_a_schema_that_cannot_be_applied_judges_nothing():
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"$ref": "https://example.invalid/s.json"}},
    }
    assert check(chat("q", response_format=fmt), answer('{"a": 1}')) is None
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    assert check(chat("q", response_format=bad), answer('{"a": 1}')) is None
    assert check(chat("q", response_format=bad), answer("not json"))[0] == "schemaInvalid"
