"""Condition trees: each key, the combinators, and keyword matching on word boundaries."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_sidecar.conditions import evaluate, first_keyword
from router_sidecar.config import validate_condition
from router_sidecar.signals import Hints
from tests.unit.routing_fixtures import WEATHER_TOOL, signals_for

PLAIN = signals_for("Summarise this paragraph in two lines.")
CODE = signals_for("Why does this fail?\n```python\nimport os\n```\nsee src/app.py and lib/db.py")
LONG = signals_for("word " * 1000)
TOOLS = signals_for("weather in Oslo?", tools=[WEATHER_TOOL])
HINTED = signals_for("hi", Hints(tier="enterprise", task="extract", risk="high"))


def holds(when, signals) -> bool:
    validate_condition(when, "when")  # every tree used here is one the config would accept
    return evaluate(when, signals).matched


# --- leaf keys -------------------------------------------------------------------------------


def test_prompt_chars_over_is_strictly_greater():
    assert holds({"promptCharsOver": 4999}, LONG)
    assert not holds({"promptCharsOver": 5000}, LONG)


def test_prompt_tokens_over_uses_the_estimate():
    assert LONG.prompt_tokens == 1250
    assert holds({"promptTokensOver": 1000}, LONG)
    assert not holds({"promptTokensOver": 1250}, LONG)


def test_has_code_block_matches_true_and_false():
    assert holds({"hasCodeBlock": True}, CODE)
    assert not holds({"hasCodeBlock": True}, PLAIN)
    assert holds({"hasCodeBlock": False}, PLAIN)


def test_files_over_counts_referenced_files():
    assert CODE.files == 2
    assert holds({"filesOver": 1}, CODE)
    assert not holds({"filesOver": 2}, CODE)


def test_has_tools_matches_tool_requests():
    assert holds({"hasTools": True}, TOOLS)
    assert not holds({"hasTools": True}, PLAIN)
    assert holds({"hasTools": False}, PLAIN)


@pytest.mark.parametrize(
    ("key", "values", "expected"),
    [
        ("tierIn", ["free", "Enterprise"], True),
        ("tierIn", ["free"], False),
        ("taskIn", ["extract", "classify"], True),
        ("riskIn", ["HIGH"], True),
        ("riskIn", ["low"], False),
    ],
)
def test_hint_lists_match_case_insensitively(key, values, expected):
    assert holds({key: values}, HINTED) is expected


def test_latency_budget_under_matches_a_tighter_hint_only():
    tight = signals_for("hi", Hints(latency_budget_ms=800))
    assert holds({"latencyBudgetMsUnder": 1000}, tight)
    assert not holds({"latencyBudgetMsUnder": 800}, tight)  # strictly below
    assert not holds({"latencyBudgetMsUnder": 1000}, PLAIN)  # no hint never matches
    assert holds({"not": {"latencyBudgetMsUnder": 1000}}, PLAIN)
    assert evaluate({"latencyBudgetMsUnder": 1000}, tight).detail == (
        "latencyBudgetMsUnder 1000: latency budget 800 ms < 1000")
    assert "no latency budget given" in evaluate({"latencyBudgetMsUnder": 1000}, PLAIN).detail


def test_a_missing_hint_never_matches_a_list():
    result = evaluate({"tierIn": ["free", "enterprise"]}, PLAIN)
    assert not result.matched
    assert "no tier given" in result.detail


# --- keywords --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "keyword", "expected"),
    [
        ("Why is my SQL query slow?", "sql", True),
        ("I use sqlite for tests", "sql", False),
        ("mysql is down", "sql", False),
        ("sql_table is empty", "sql", False),
        ("the SQL's plan", "sql", True),
        ("(sql)", "sql", True),
        ("Here is the Stack Trace:", "stack trace", True),
        ("a stack\n  trace follows", "stack trace", True),
        ("stack overflow trace", "stack trace", False),
        ("help with C++ templates", "c++", True),
        ("write a unit test", "unit test", True),
        ("write unit tests", "unit test", False),
        ("Debugging now", "debug", False),
    ],
)
def test_keywords_match_case_insensitively_on_word_boundaries(prompt, keyword, expected):
    assert holds({"keywordsAny": [keyword]}, signals_for(prompt)) is expected


def test_keywords_any_reports_the_first_keyword_found_in_the_text():
    sig = signals_for("please refactor this python module")
    result = evaluate({"keywordsAny": ["python", "refactor", "java"]}, sig)
    assert result.matched
    assert result.detail == "keywordsAny [python, refactor, java] matched 'refactor'"
    assert result.short == "keywordsAny matched 'refactor'"


def test_keywords_all_needs_every_keyword():
    sig = signals_for("compare the Postgres and MySQL plans")
    assert holds({"keywordsAll": ["compare", "mysql"]}, sig)
    result = evaluate({"keywordsAll": ["compare", "oracle"]}, sig)
    assert not result.matched
    assert "'oracle' not found" in result.detail


def test_keywords_are_read_from_user_text_only():
    sig = signals_for("what time is it?", system="You are a security and compliance assistant.")
    assert not holds({"keywordsAny": ["security", "compliance"]}, sig)


def test_first_keyword_returns_none_without_a_match():
    assert first_keyword(["alpha", "beta"], "gamma delta") is None


def test_details_quote_the_keyword_not_the_prompt():
    sig = signals_for("My account number 12345 has a SQL error")
    result = evaluate({"keywordsAny": ["sql"]}, sig)
    assert "12345" not in result.detail
    assert "12345" not in result.short


# --- combinators -----------------------------------------------------------------------------


def test_any_of_holds_when_one_child_holds():
    when = {"anyOf": [{"hasTools": True}, {"hasCodeBlock": True}]}
    assert holds(when, CODE)
    assert holds(when, TOOLS)
    result = evaluate(when, PLAIN)
    assert not result.matched
    assert result.detail.startswith("anyOf: none held")


def test_all_of_needs_every_child():
    when = {"allOf": [{"hasCodeBlock": True}, {"filesOver": 1}]}
    assert holds(when, CODE)
    assert not holds({"allOf": [{"hasCodeBlock": True}, {"filesOver": 5}]}, CODE)


def test_not_inverts_its_condition():
    assert holds({"not": {"hasTools": True}}, PLAIN)
    assert not holds({"not": {"hasTools": True}}, TOOLS)
    assert evaluate({"not": {"hasTools": True}}, PLAIN).detail.startswith("not (hasTools true")


def test_several_keys_in_one_object_must_all_hold():
    when = {"hasCodeBlock": True, "keywordsAny": ["why"], "filesOver": 1}
    result = evaluate(when, CODE)
    assert result.matched
    assert " and " in result.short
    assert not holds({"hasCodeBlock": True, "hasTools": True}, CODE)


def test_combinators_nest():
    when = {
        "anyOf": [
            {"allOf": [{"tierIn": ["enterprise"]}, {"not": {"riskIn": ["low"]}}]},
            {"promptCharsOver": 100_000},
        ]
    }
    assert holds(when, HINTED)
    assert not holds(when, PLAIN)


def test_an_unknown_key_raises():
    with pytest.raises(ValueError, match="unknown condition key 'lengthOver'"):
        evaluate({"lengthOver": 3}, PLAIN)


def test_keywords_still_match_when_case_folding_changes_the_text_length():
    sig = signals_for("Die STRASSE und die Straße haben ein SQL Problem")
    assert len(sig.folded_text) != len(sig.user_text)
    assert evaluate({"keywordsAny": ["problem", "sql"]}, sig).short == "keywordsAny matched 'sql'"
    assert holds({"keywordsAll": ["straße", "sql"]}, sig)
    assert not holds({"keywordsAny": ["sqlite"]}, sig)


# --- first_keyword against the rule it implements ----------------------------------------------

KEYWORDS = ["why", "root cause", "ab", "b", "a b", "ss", "straße", "de", "debug", "c++", "k", "é"]
PIECES = ["why", "Why", "WHY", "whyever", "root", "cause", "a", "ab", "b", "ß", "SS", "x_y",
          "debug", "de", "bug", "c++", "é", "İ", "K", "k", "-", "_", "\n", "  "]


def _first_by_rule(keywords: list[str], text: str) -> str | None:
    """The keyword whose case-insensitive, whole-word match starts first; on a tie, the one
    listed first."""
    best = None
    for keyword in keywords:
        words = r"\s+".join(re.escape(w) for w in keyword.split())
        match = re.search(rf"(?<!\w){words}(?!\w)", text, re.IGNORECASE)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), keyword)
    return None if best is None else best[1]


SEPARATORS = [" ", "", ".", "\t"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(KEYWORDS), min_size=1, max_size=5, unique=True),
    st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=12),
)
def test_first_keyword_is_the_earliest_whole_word_match(keywords, pieces) -> None:
    text = "".join(word + sep for word, sep in pieces)
    assert first_keyword(keywords, text) == _first_by_rule(keywords, text)
