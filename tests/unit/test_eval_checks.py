"""Declared answer checks and judge verdicts used by `laneway eval --live`."""

from __future__ import annotations

import pytest

from laneway.evaluation.checks import Check, CheckError, parse_check, run_check
from laneway.evaluation.judges import default_judge_lane, judge_body, read_verdict
from laneway_operator.manifests import compile_files
from router_sidecar.config import parse_config


def verdict(line: dict, answer: str) -> bool:
    check = parse_check(line)
    assert check is not None
    return run_check(check, answer).passed


def test_expected_and_answer_fields_mean_the_answer_contains_them_ignoring_case():
    assert verdict({"expected": "Paris"}, "The capital is  paris.")
    assert verdict({"answer": 42}, "So the total is 42 apples.")
    assert verdict({"expected": ["1/2", "0.5"]}, "It is 0.5")
    assert not verdict({"expected": "Paris"}, "I'm not sure.")


def test_exact_ignores_surrounding_space_and_folds_inner_runs():
    line = {"check": {"type": "exact", "value": "Yes it is"}}
    assert verdict(line, "  yes   it is\n")
    assert not verdict(line, "Yes it is.")
    strict = {"check": {"type": "exact", "value": "YES", "ignoreCase": False}}
    assert not verdict(strict, "yes")


def test_regex_searches_anywhere_and_is_case_sensitive_by_default():
    assert verdict({"check": {"type": "regex", "pattern": r"\b42\b"}}, "it is 42.")
    assert not verdict({"check": {"type": "regex", "pattern": r"\b42\b"}}, "it is 420")
    assert not verdict({"check": {"type": "regex", "pattern": "Yes"}}, "yes")
    assert verdict({"check": {"type": "regex", "pattern": "Yes", "ignoreCase": True}}, "yes")


def test_schema_checks_json_answers_even_inside_a_code_fence():
    line = {
        "check": {
            "type": "schema",
            "schema": {
                "type": "object",
                "required": ["name"],
                "properties": {"age": {"type": "integer"}},
            },
        }
    }
    assert verdict(line, '{"name": "Ada", "age": 36}')
    assert verdict(line, '```json\n{"name": "Ada"}\n```')
    assert not verdict(line, '{"age": 36}')
    assert not verdict(line, "Here is the JSON: {")
    check = parse_check(line)
    assert check is not None
    assert run_check(check, '{"name": "Ada", "age": "old"}').reason.startswith(
        "answer breaks the schema"
    )


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"type": "contains"}, "check.value: is required"),
        ({"type": "contains", "value": ""}, "check.value: must not be empty"),
        ({"type": "exact", "value": {"a": 1}}, "check.value: must be a string"),
        ({"type": "schema", "schema": {"type": 7}}, "check.schema: not a valid JSON Schema"),
        ({"type": "judge", "lane": ""}, "check.lane: must be a non-empty string"),
        ({"type": "exact", "value": "x", "ignoreCase": "no"}, "check.ignoreCase: must be true"),
    ],
)
def test_a_bad_check_names_the_field(check, message):
    with pytest.raises(CheckError, match=message.replace(".", r"\.")):
        parse_check({"check": check})


def test_a_line_without_a_check_is_left_to_the_judge():
    assert parse_check({"id": 1, "prompt": "x"}) is None
    assert parse_check({"check": {"type": "judge"}}) == Check(type="judge")


def test_judge_replies_pass_only_when_they_start_with_pass():
    assert read_verdict("PASS\nThe answer is right.").passed
    assert read_verdict("**Pass**: correct").passed
    assert not read_verdict("FAIL - it hedges").passed
    assert read_verdict("FAIL - it hedges").reason == "judge: it hedges"
    unreadable = read_verdict("The answer looks fine, PASS")
    assert not unreadable.passed
    assert "did not start with PASS or FAIL" in unreadable.reason
    assert not unreadable.graded


def test_the_judge_sees_the_request_the_answer_and_the_criteria_with_long_text_cut():
    body = judge_body("Q" * 10_000, "short answer", "Must cite a source.")
    system, user = body["messages"]
    assert "Must cite a source." in system["content"]
    assert "PASS or FAIL" in system["content"]
    assert "short answer" in user["content"]
    assert "more characters cut" in user["content"]
    assert len(user["content"]) < 7_000


def test_the_default_judge_is_the_lane_with_the_highest_output_price():
    policy = "tests/unit/eval_data/policy.yaml"
    config = parse_config(compile_files([policy], "evals", None))
    assert default_judge_lane(config) == "premium"
