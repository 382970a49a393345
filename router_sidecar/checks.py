"""Escalation checks on a finished answer: should this request move to the next route?

Called by the sidecar's request engine after a lane returned a complete, non-streaming answer, and
by `explain` to list what would escalate. Pure: the engine measures the elapsed time and passes it
in. Only the triggers listed in the policy's `escalation.triggers` can fire; when several would,
the first in `router_sidecar.config.ESCALATION_TRIGGERS` order is reported:

- `schemaInvalid`: the request asked for `response_format` `json_object` and the content is not
  JSON, or `json_schema` and the content does not validate against that schema.
- `toolCallInvalid`: a tool call names a tool the request did not offer, or its arguments are not
  JSON or do not validate against that tool's `parameters` schema (empty arguments count as `{}`).
- `truncated`: `finish_reason` is `length`, or the answer is empty and has no tool calls.
- `uncertain`: the content contains an uncertainty marker (case-insensitive; curly apostrophes
  count as straight ones). A policy without markers gets `DEFAULT_UNCERTAINTY_MARKERS`.
- `latencyBudgetExceeded`: the call took longer than the request's latency hint, or else the
  policy's `latencyBudgetMs`.
- `refusal`: the answer refuses (see `is_refusal`; also a `refusal` field or `finish_reason`
  `content_filter`) and the request's risk is a low-risk level or was not given.

Details never quote the answer or the prompt; they name the trigger, the rule and the place.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from router_sidecar.config import ESCALATION_TRIGGERS, RouterConfig
from router_sidecar.decision import escalation_target
from router_sidecar.signals import Signals, build_frozen

__all__ = [
    "DEFAULT_UNCERTAINTY_MARKERS",
    "check_answer",
    "escalation_target",
    "is_refusal",
]

log = logging.getLogger(__name__)

DEFAULT_UNCERTAINTY_MARKERS = (
    "I'm not sure",
    "I am not sure",
    "I'm not certain",
    "I cannot determine",
    "I can't determine",
    "I don't know",
)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})

# A refusal opens the answer: an optional apology, then "I/we cannot <help-like verb>".
_REFUSAL_RE = re.compile(
    r"^(?:(?:(?:i'm|i am|we're|we are)\s+(?:very\s+|really\s+)?sorry|sorry|apologies|"
    r"unfortunately|as an ai(?:\s+(?:language\s+model|assistant|model))?)[,.!]?\s*(?:but\s+)?)?"
    r"(?:i|we)\s*(?:"
    r"(?:can't|cannot|can not|won't|will not|(?:am|'m|are|'re)\s+(?:not\s+able|unable)\s+to|"
    r"(?:won't|will not)\s+be\s+able\s+to|(?:am|'m|are|'re)\s+not\s+(?:allowed|permitted)\s+to)"
    r"\s+(?:help|assist|comply|provide|do|fulfil|fulfill|support|answer|share|create|generate|"
    r"complete|engage|participate|write|give|discuss|produce|continue|process)\b"
    r"|must\s+(?:decline|refuse)\b)",
    re.IGNORECASE,
)
_REFUSAL_WINDOW = 300


@dataclass(frozen=True)
class _Answer:
    """The parts of an OpenAI chat completion response that the checks read."""

    content: str
    tool_calls: tuple[Mapping[str, Any], ...]
    finish_reason: str | None
    refusal: str


# Parsed JSON holds dicts: checking for dict first skips the slow Mapping ABC check.
_OBJECT = (dict, Mapping)


def _read_answer(answer: Mapping[str, Any]) -> _Answer:
    choices = answer.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    first = first if isinstance(first, _OBJECT) else {}
    message = first.get("message")
    message = message if isinstance(message, _OBJECT) else {}
    content = message.get("content")
    calls = message.get("tool_calls")
    calls = [c for c in calls if isinstance(c, _OBJECT)] if isinstance(calls, list) else []
    legacy = message.get("function_call")
    if legacy is not None and isinstance(legacy, _OBJECT):  # None would take the slow check
        calls.append({"type": "function", "function": legacy})
    refusal = message.get("refusal")
    finish = first.get("finish_reason")
    return build_frozen(
        _Answer,
        {
            "content": content if isinstance(content, str) else "",
            "tool_calls": tuple(calls),
            "finish_reason": finish if isinstance(finish, str) else None,
            "refusal": refusal if isinstance(refusal, str) else "",
        },
    )


def _straight_apostrophes(text: str) -> str:
    # Every character the table maps is outside ASCII, and translating is slow: skip it when it
    # cannot change anything.
    return text if text.isascii() else text.translate(_APOSTROPHES)


def is_refusal(text: str) -> bool:
    """True when an answer opens by declining ("I'm sorry, but I can't help with that.")."""
    head = _straight_apostrophes(text.lstrip()[:_REFUSAL_WINDOW])  # one character for one
    return bool(_REFUSAL_RE.match(head))


# ---------------------------------------------------------------------------------------------
# JSON Schema validation, with compiled validators cached by the schema's canonical text.


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Validator | None:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        log.debug("Not checking against an invalid JSON schema: %s", exc.message)
        return None
    return cls(schema)


def _schema_error(instance: Any, schema: Any) -> str | None:
    """Where and why an instance fails the schema, without quoting the instance; or None."""
    if not isinstance(schema, (Mapping, bool)):
        return None
    validator = _validator(json.dumps(schema, sort_keys=True))
    if validator is None:
        return None
    try:
        error = next(iter(validator.iter_errors(instance)), None)
    except (Unresolvable, re.error) as exc:
        # A schema we cannot apply (an unresolvable $ref, a bad pattern) judges nothing.
        log.debug("Not checking against a schema that cannot be applied: %s", exc)
        return None
    if error is None:
        return None
    rule = json.dumps(error.validator_value, sort_keys=True)
    rule = rule if len(rule) <= 60 else rule[:57] + "..."
    return f"at {error.json_path}: fails {error.validator} {rule}"


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


# ---------------------------------------------------------------------------------------------
# The triggers, one function each: a human detail when the trigger fires, else None.

_Check = Callable[[RouterConfig, Mapping[str, Any], _Answer, Signals, float], "str | None"]


def _schema_invalid(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind not in ("json_object", "json_schema") or (ans.tool_calls and not ans.content):
        return None
    ok, value = _parse_json(ans.content)
    if not ok:
        return f"response_format is {kind} but the answer is not valid JSON"
    spec = fmt.get("json_schema") if kind == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    problem = _schema_error(value, schema) if schema is not None else None
    return f"the answer does not match the response schema {problem}" if problem else None


def _tool_schemas(body: Mapping[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters")
    functions = body.get("functions")
    for function in functions if isinstance(functions, list) else ():
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters")
    return schemas


def tool_call_problem(body: Mapping[str, Any], answer: Mapping[str, Any]) -> str | None:
    """Why a tool call in this answer cannot be used (a tool the request did not offer, arguments
    that are not JSON or do not match the tool's parameters), or None; the `toolCallInvalid`
    fallback trigger asks this of each answer."""
    return _tool_call_invalid_in(body, _read_answer(answer))


def _tool_call_invalid(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    return _tool_call_invalid_in(body, ans)


def _tool_call_invalid_in(body: Mapping[str, Any], ans: _Answer) -> str | None:
    if not ans.tool_calls:
        return None
    schemas = _tool_schemas(body)
    for call in ans.tool_calls:
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        name = function.get("name")
        if not isinstance(name, str) or name not in schemas:
            return f"a tool call names {name!r}, which the request did not offer"
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) and arguments.strip() else "{}"
        ok, value = _parse_json(text)
        if not ok:
            return f"the arguments of the call to {name!r} are not valid JSON"
        problem = _schema_error(value, schemas[name]) if schemas[name] is not None else None
        if problem:
            return f"the arguments of the call to {name!r} do not match its parameters {problem}"
    return None


def _truncated(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    if ans.finish_reason == "length":
        return "finish_reason is length: the answer was cut off at the token limit"
    if not ans.content.strip() and not ans.tool_calls and not ans.refusal:
        return "the answer is empty and has no tool calls"
    return None


def _uncertain(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    text = _straight_apostrophes(ans.content).casefold()
    markers = config.escalation.uncertainty_markers or DEFAULT_UNCERTAINTY_MARKERS
    for marker, folded in _folded_markers(markers):
        if folded in text:
            return f"the answer contains the uncertainty marker {marker!r}"
    return None


@lru_cache(maxsize=256)
def _folded_markers(markers: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(marker, its comparable form) per marker: folded once per config, not per answer."""
    return tuple((m, m.translate(_APOSTROPHES).casefold()) for m in markers)


def _latency_exceeded(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    budget, source = sig.latency_budget_ms, "x-laneway-latency-budget-ms"
    if budget is None:
        budget, source = config.latency_budget_ms, "latencyBudgetMs"
    if budget is None or ms <= budget:
        return None
    return f"the answer took {ms:.0f} ms, over the {budget} ms budget ({source})"


def _refusal(
    config: RouterConfig, body: Mapping[str, Any], ans: _Answer, sig: Signals, ms: float
) -> str | None:
    refused = bool(ans.refusal) or ans.finish_reason == "content_filter"
    if not (refused or is_refusal(ans.content)):
        return None
    low = {level.lower() for level in config.escalation.low_risk_levels}
    if sig.risk is None:
        return "the answer is a refusal and the request gave no risk level"
    if sig.risk.lower() in low:
        return f"the answer is a refusal and risk {sig.risk!r} is a low-risk level"
    return None


_CHECKS: dict[str, _Check] = {
    "schemaInvalid": _schema_invalid,
    "toolCallInvalid": _tool_call_invalid,
    "truncated": _truncated,
    "uncertain": _uncertain,
    "latencyBudgetExceeded": _latency_exceeded,
    "refusal": _refusal,
}


def check_answer(
    config: RouterConfig,
    body: Mapping[str, Any],
    answer: Mapping[str, Any],
    signals: Signals,
    elapsed_ms: float,
) -> tuple[str, str] | None:
    """(trigger, detail) for the first active escalation trigger the answer sets off, or None."""
    checks = _active_checks(config.escalation.triggers)
    if not checks:
        return None
    view = _read_answer(answer)
    for trigger, check in checks:
        detail = check(config, body, view, signals, elapsed_ms)
        if detail is not None:
            return trigger, detail
    return None


@lru_cache(maxsize=64)
def _active_checks(active: frozenset[str]) -> tuple[tuple[str, _Check], ...]:
    """The checks of the active triggers, in ESCALATION_TRIGGERS order (`selfCheck` is a call to
    a lane, made by the engine once these have passed)."""
    return tuple((t, _CHECKS[t]) for t in ESCALATION_TRIGGERS if t in active and t in _CHECKS)
