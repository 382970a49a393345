"""Evaluation of `when` condition trees (triage rules and complexity signals) against Signals.

Called by `router_sidecar.decision` for every triage rule and complexity signal of a request. The
tree's shape was checked when the config was loaded (`router_sidecar.config.validate_condition`),
so this module trusts it and only evaluates. Each result carries a `detail` for explain output and
a `short` form for the one-line `x-laneway-reason` header; neither ever quotes prompt text beyond
the configured keyword that matched.

Keys: `promptCharsOver`, `promptTokensOver`, `filesOver` (strictly greater than), `hasCodeBlock`,
`hasTools` (equal to the boolean), `keywordsAny`, `keywordsAll` (user text, case-insensitive, on
word boundaries; a keyword with spaces matches the phrase with any whitespace between its words),
`tierIn`, `taskIn`, `riskIn` (case-insensitive; no hint never matches), `latencyBudgetMsUnder`
(the request's latency budget hint is below it; no hint never matches), and the combinators
`allOf`, `anyOf`, `not`. Several keys in one object must all hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from router_sidecar.signals import Signals, build_frozen

_SHOWN_KEYWORDS = 6

_Evaluator = Callable[[Any, "Signals"], "ConditionResult"]


@dataclass(frozen=True)
class ConditionResult:
    """Whether a condition held, why (`detail`), and a header-sized summary (`short`)."""

    matched: bool
    detail: str
    short: str = ""


def _result(matched: bool, detail: str, short: str = "") -> ConditionResult:
    # A few of these are made per rule of every request: built without the frozen __init__.
    return build_frozen(ConditionResult, {"matched": matched, "detail": detail, "short": short})


# ---------------------------------------------------------------------------------------------
# Keyword matching, the hot path. Python's regex engine cannot skip ahead to a pattern that opens
# with a lookbehind, so a plain search costs microseconds per kilobyte per keyword; one
# alternation of all keywords is no better (the engine tries every alternative at every letter).
# Instead each keyword's first word is found with str.find on case-folded text (fast, in C), and
# the compiled pattern is only tried at those places. A keyword list is prepared once (cached by
# its tuple), and once one keyword has matched, the others are only looked for before it.


def _keyword_source(keyword: str) -> str:
    words = keyword.split()
    return r"\s+".join(re.escape(word) for word in words)


@lru_cache(maxsize=4096)
def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """The pattern for one keyword: case-insensitive, not inside a longer word."""
    return re.compile(rf"(?<!\w){_keyword_source(keyword)}(?!\w)", re.IGNORECASE)


_Prepared = tuple[tuple[str, str, re.Pattern[str]], ...]


@lru_cache(maxsize=1024)
def _prepared(keywords: tuple[str, ...]) -> _Prepared:
    """(keyword, its first word case-folded, its pattern) for each keyword of a list."""
    return tuple((k, k.split()[0].casefold(), keyword_pattern(k)) for k in keywords)


def _find(anchor: str, pattern: re.Pattern[str], text: str, folded: str, end: int) -> int | None:
    """Where the pattern first matches at an `anchor` that lies within folded[:end], or None."""
    start = folded.find(anchor, 0, end)
    while start != -1:
        if pattern.match(text, start):
            return start
        start = folded.find(anchor, start + 1, end)
    return None


def find_keyword(keyword: str, text: str, folded: str | None = None) -> int | None:
    """Where the keyword first matches in the text, or None. `folded` is `text.casefold()`."""
    folded = text.casefold() if folded is None else folded
    pattern = keyword_pattern(keyword)
    if len(folded) != len(text):
        # Case folding changed the length, so positions do not line up: search the slow way.
        match = pattern.search(text)
        return None if match is None else match.start()
    return _find(keyword.split()[0].casefold(), pattern, text, folded, len(folded))


def first_keyword(keywords: Sequence[str], text: str, folded: str | None = None) -> str | None:
    """The configured keyword whose match comes first in the text, or None (on a tie, the one
    listed first)."""
    folded = text.casefold() if folded is None else folded
    if len(folded) != len(text):
        return _first_keyword_slowly(keywords, text)
    best: tuple[int, str] | None = None
    for keyword, anchor, pattern in _prepared(tuple(keywords)):
        # A later keyword wins only by starting before the best match so far. Most keywords
        # are not in the text at all: one find says so before any call.
        end = len(folded) if best is None else best[0] + len(anchor) - 1
        if folded.find(anchor, 0, end) == -1:
            continue
        at = _find(anchor, pattern, text, folded, end)
        if at is not None:
            best = (at, keyword)
    return None if best is None else best[1]


def _first_keyword_slowly(keywords: Sequence[str], text: str) -> str | None:
    # For text whose case folding changes its length (see find_keyword).
    best: tuple[int, str] | None = None
    for keyword in keywords:
        match = keyword_pattern(keyword).search(text)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), keyword)
    return None if best is None else best[1]


def _listed(values: Sequence[Any]) -> str:
    return _listed_tuple(tuple(values))


@lru_cache(maxsize=1024)
def _listed_tuple(values: tuple[Any, ...]) -> str:
    # The lists are the config's: the same few are shown for every request.
    shown = ", ".join(str(v) for v in values[:_SHOWN_KEYWORDS])
    more = len(values) - _SHOWN_KEYWORDS
    return f"[{shown}{f', ... +{more} more' if more > 0 else ''}]"


# ---------------------------------------------------------------------------------------------
# Leaf conditions.


def _keywords_any(value: Sequence[str], signals: Signals) -> ConditionResult:
    hit = first_keyword(value, signals.user_text, signals.folded_text)
    if hit is None:
        return _result(False, f"keywordsAny {_listed(value)}: none found", "no keyword")
    return _result(
        True, f"keywordsAny {_listed(value)} matched {hit!r}", f"keywordsAny matched {hit!r}"
    )


def _keywords_all(value: Sequence[str], signals: Signals) -> ConditionResult:
    for keyword in value:
        if find_keyword(keyword, signals.user_text, signals.folded_text) is None:
            detail = f"keywordsAll {_listed(value)}: {keyword!r} not found"
            return _result(False, detail, f"keywordsAll missing {keyword!r}")
    found = ", ".join(repr(k) for k in value[:_SHOWN_KEYWORDS])
    return _result(True, f"keywordsAll {_listed(value)} all found", f"keywordsAll matched {found}")


def _over(key: str, unit: str, actual: Callable[[Signals], int]) -> _Evaluator:
    def check(value: int, signals: Signals) -> ConditionResult:
        count = actual(signals)
        matched = count > value
        relation = ">" if matched else "<="
        return _result(
            matched, f"{key} {value}: {count} {unit} {relation} {value}", f"{key} {value} ({count})"
        )

    return check


def _flag(key: str, what: str, actual: Callable[[Signals], bool]) -> _Evaluator:
    def check(value: bool, signals: Signals) -> ConditionResult:
        present = actual(signals)
        state = what if present else f"no {what}"
        text = f"{key} {str(value).lower()}"
        return _result(present == value, f"{text}: {state}", text)

    return check


def _one_of(key: str, hint: str, actual: Callable[[Signals], str | None]) -> _Evaluator:
    def check(value: Sequence[str], signals: Signals) -> ConditionResult:
        given = actual(signals)
        if given is None:
            return _result(False, f"{key} {_listed(value)}: no {hint} given", f"no {hint}")
        matched = given.lower() in _lowered(tuple(value))
        return _result(matched, f"{key} {_listed(value)}: {hint} is {given!r}", f"{key} {given!r}")

    return check


def _latency_under(value: int, signals: Signals) -> ConditionResult:
    key, budget = "latencyBudgetMsUnder", signals.latency_budget_ms
    if budget is None:
        return _result(False, f"{key} {value}: no latency budget given", "no latency budget")
    matched = budget < value
    relation = "<" if matched else ">="
    return _result(
        matched, f"{key} {value}: latency budget {budget} ms {relation} {value}",
        f"{key} {value} ({budget} ms)",
    )


@lru_cache(maxsize=1024)
def _lowered(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


# ---------------------------------------------------------------------------------------------
# Combinators.


def _all_of(value: Sequence[Mapping[str, Any]], signals: Signals) -> ConditionResult:
    results = []
    for child in value:
        result = evaluate(child, signals)
        if not result.matched:
            return _result(False, f"allOf: {result.detail}", result.short)
        results.append(result)
    return _result(
        True,
        "allOf: " + "; ".join(r.detail for r in results),
        " and ".join(r.short for r in results),
    )


def _any_of(value: Sequence[Mapping[str, Any]], signals: Signals) -> ConditionResult:
    misses = []
    for child in value:
        result = evaluate(child, signals)
        if result.matched:
            return _result(True, f"anyOf: {result.detail}", result.short)
        misses.append(result.detail)
    return _result(False, "anyOf: none held (" + "; ".join(misses) + ")", "anyOf: none")


def _not(value: Mapping[str, Any], signals: Signals) -> ConditionResult:
    result = evaluate(value, signals)
    return _result(not result.matched, f"not ({result.detail})", f"not ({result.short})")


_EVALUATORS: dict[str, _Evaluator] = {
    "promptCharsOver": _over("promptCharsOver", "chars", lambda s: s.prompt_chars),
    "promptTokensOver": _over("promptTokensOver", "tokens (est.)", lambda s: s.prompt_tokens),
    "filesOver": _over("filesOver", "files", lambda s: s.files),
    "hasCodeBlock": _flag("hasCodeBlock", "code block", lambda s: s.has_code_block),
    "hasTools": _flag("hasTools", "tools offered", lambda s: s.has_tools),
    "keywordsAny": _keywords_any,
    "keywordsAll": _keywords_all,
    "tierIn": _one_of("tierIn", "tier", lambda s: s.tier),
    "taskIn": _one_of("taskIn", "task", lambda s: s.task),
    "riskIn": _one_of("riskIn", "risk", lambda s: s.risk),
    "latencyBudgetMsUnder": _latency_under,
    "allOf": _all_of,
    "anyOf": _any_of,
    "not": _not,
}


def evaluate(when: Mapping[str, Any], signals: Signals) -> ConditionResult:
    """Evaluate a condition object; every key in it must hold. Unknown keys raise ValueError."""
    results = []
    for key, value in when.items():
        evaluator = _EVALUATORS.get(key)
        if evaluator is None:
            raise ValueError(f"unknown condition key {key!r}; use one of {', '.join(_EVALUATORS)}")
        result = evaluator(value, signals)
        if not result.matched:
            return result
        results.append(result)
    if not results:
        return _result(True, "empty condition: always holds", "always")
    if len(results) == 1:
        return results[0]
    return _result(
        True, " and ".join(r.detail for r in results), " and ".join(r.short for r in results)
    )
