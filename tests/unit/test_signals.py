"""Request hints and signals: what the router reads from headers and from the request body."""

from __future__ import annotations

import pytest

from router_sidecar.signals import (
    HintError,
    Hints,
    estimate_tokens,
    extract_signals,
    parse_hints,
)
from tests.unit.routing_fixtures import WEATHER_TOOL, agent_step, chat, signals_for

# --- hints -----------------------------------------------------------------------------------


def test_hints_are_read_from_headers_with_any_name_case():
    hints = parse_hints(
        {
            "X-Laneway-Tier": "Enterprise",
            "x-laneway-task": "summarise",
            "X-LANEWAY-RISK": "high",
            "x-laneway-latency-budget-ms": "1500",
            "x-laneway-tool-failures": "2",
            "content-type": "application/json",
        }
    )
    assert hints == Hints(
        tier="enterprise", task="summarise", risk="high", latency_budget_ms=1500, tool_failures=2
    )


def test_no_hint_headers_give_empty_hints():
    assert parse_hints({"authorization": "Bearer x"}) == Hints()


def test_an_empty_hint_header_counts_as_absent():
    assert parse_hints({"x-laneway-tier": "  ", "x-laneway-tool-failures": ""}) == Hints()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-laneway-latency-budget-ms", "fast"),
        ("x-laneway-latency-budget-ms", "1.5"),
        ("x-laneway-latency-budget-ms", "0"),
        ("x-laneway-latency-budget-ms", "-100"),
        ("x-laneway-latency-budget-ms", "999999999999"),
        ("x-laneway-tool-failures", "-1"),
        ("x-laneway-tool-failures", "two"),
        ("x-laneway-tier", "gold tier"),
        ("x-laneway-task", "a" * 65),
        ("x-laneway-risk", "<script>"),
        ("x-laneway-tier", "-leading-dash"),
    ],
)
def test_a_bad_hint_value_is_rejected_with_the_header_named(header, value):
    with pytest.raises(HintError) as err:
        parse_hints({header: value})
    assert str(err.value).startswith(f"{header}: must be")


def test_a_hint_error_does_not_echo_a_huge_value():
    with pytest.raises(HintError) as err:
        parse_hints({"x-laneway-task": "x" * 5000})
    assert len(str(err.value)) < 300


# --- lengths ---------------------------------------------------------------------------------


def test_prompt_length_counts_every_message_and_tool_call_arguments():
    body = {
        "messages": [
            {"role": "system", "content": "S" * 100},
            {"role": "user", "content": [{"type": "text", "text": "U" * 40}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": "T" * 8},
        ]
    }
    sig = extract_signals(body, Hints())
    assert sig.prompt_chars == 100 + 40 + 2 + 8
    assert sig.prompt_tokens == 25 + 10 + 1 + 2


def test_tokens_are_estimated_at_four_ascii_characters_or_one_other_character_each():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("数据库") == 3
    assert estimate_tokens("ab数") == 2


# --- user-only signals -----------------------------------------------------------------------


def test_keywords_code_and_files_come_from_user_messages_only():
    body = chat("hello", system="You review security of src/app.py.\n```\ncode\n```")
    sig = extract_signals(body, Hints())
    assert "security" not in sig.user_text
    assert not sig.has_code_block
    assert sig.files == 0
    assert sig.prompt_chars > len("hello")


def test_user_text_joins_all_user_messages_and_text_parts():
    body = {
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer about python"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ]
    }
    sig = extract_signals(body, Hints())
    assert sig.user_text == "first question\nsecond"


def test_a_code_fence_in_user_text_is_a_code_block():
    assert signals_for("Fix this:\n```python\nprint(1)\n```").has_code_block
    assert not signals_for("Fix `print(1)` please").has_code_block


@pytest.mark.parametrize(
    ("prompt", "files"),
    [
        ("Please look at src/app.py and src/db/models.py", 2),
        ("Compare main.go with README.md and report.pdf", 3),
        ("src/app.py, then src/app.py again", 1),
        ("./scripts/run and /etc/hosts.conf", 1),
        ("I attached the report, see the attached file", 0),
        ("Read https://example.com/docs/index.html for details", 0),
        ("Is Node.js faster than Vue.js at example.com?", 0),
        ("Version 3.11 is out, e.g. next week at 10 a.m.", 0),
        ("Open config.yaml.", 1),
    ],
)
def test_files_count_distinct_file_names_in_user_text(prompt, files):
    assert signals_for(prompt).files == files


def test_attachment_parts_count_as_files_and_images_need_vision():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "file", "file": {"file_id": "file-1"}},
                ],
            }
        ]
    }
    sig = extract_signals(body, Hints())
    assert sig.files == 2
    assert sig.needs_vision


def test_a_text_only_request_does_not_need_vision():
    assert not signals_for("describe a cat").needs_vision


# --- request options -------------------------------------------------------------------------


def test_tools_and_legacy_functions_both_mean_tools_are_offered():
    with_tools = signals_for("hi", tools=[WEATHER_TOOL])
    assert with_tools.has_tools
    assert with_tools.tool_names == ("get_weather",)
    legacy = signals_for("hi", functions=[{"name": "lookup", "parameters": {}}])
    assert legacy.has_tools
    assert legacy.tool_names == ("lookup",)
    assert not signals_for("hi").has_tools


@pytest.mark.parametrize(
    ("fmt", "needs"),
    [
        ({"type": "json_object"}, True),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, True),
        ({"type": "text"}, False),
    ],
)
def test_json_response_formats_need_json_schema_support(fmt, needs):
    assert signals_for("hi", response_format=fmt).needs_json_schema is needs


def test_streaming_and_max_tokens_are_read_from_the_body():
    sig = signals_for("hi", stream=True, max_tokens=300)
    assert sig.streaming
    assert sig.max_tokens == 300
    assert signals_for("hi", max_completion_tokens=50, max_tokens=300).max_tokens == 50
    assert signals_for("hi", max_tokens=True).max_tokens is None
    assert not signals_for("hi", stream="yes").streaming


def test_hints_are_carried_into_signals():
    hints = Hints(tier="pro", task="chat", risk="low", latency_budget_ms=900, tool_failures=1)
    sig = signals_for("hi", hints)
    assert (sig.tier, sig.task, sig.risk) == ("pro", "chat", "low")
    assert (sig.latency_budget_ms, sig.tool_failures) == (900, 1)


@pytest.mark.parametrize(
    ("result", "failed"),
    [
        ("Error: permission denied", True),
        ("  error 503 from upstream", True),
        ("Traceback (most recent call last):", True),
        ("Exception in thread main", True),
        ("FAILED: 2 tests", True),
        ('{"error": {"code": 404, "message": "not found"}}', True),
        ('{ "error" : "timeout" }', True),
        ([{"type": "text", "text": "Failure: disk full"}], True),
        ('{"error": null, "result": 4}', False),
        ('{"result": "error rates are normal"}', False),
        ("Errors found: 0", False),
        ("The error rate is 0.1 %", False),
        ("deployed in 42 s", False),
    ],
)
def test_a_tool_result_that_reports_a_failure_is_counted(result: object, failed: bool):
    assert extract_signals(agent_step(result), Hints()).tool_failures == int(failed)


def test_tool_failures_are_those_since_the_last_user_message_or_the_hint_if_larger():
    body = agent_step("Error: timeout", "deployed", "Error: timeout", "error: quota")
    assert extract_signals(body, Hints()).tool_failures == 3
    assert extract_signals(body, Hints(tool_failures=5)).tool_failures == 5
    body["messages"].append({"role": "user", "content": "try again"})
    signals = extract_signals(body, Hints(tool_failures=1))
    assert (signals.tool_failures, signals.tool_failures_seen) == (1, 0)


def test_malformed_messages_are_skipped_rather_than_raising():
    body = {"messages": ["text", {"role": "user", "content": [5, {"type": 3}]}, None]}
    sig = extract_signals(body, Hints())
    assert sig.prompt_chars == 0
    assert extract_signals({}, Hints()).prompt_tokens == 0


def test_signals_as_dict_never_holds_the_prompt_text():
    sig = signals_for("my secret password is hunter2", tools=[WEATHER_TOOL])
    shown = sig.as_dict()
    assert "hunter2" not in repr(shown)
    assert shown["hasTools"] is True
    assert shown["toolNames"] == ["get_weather"]
    assert shown["promptChars"] == len("my secret password is hunter2")
