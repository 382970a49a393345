"""Answer checks declared in an eval prompt file, and the deterministic ones' verdicts.

`laneway.evaluation.dataset` calls `parse_check` for each JSONL line; `laneway.evaluation.live`
calls `run_check` on every lane's answer (the `judge` type is graded by a lane instead, see
`laneway.evaluation.judges`). A line declares its check in one of two ways:

- `check: {type: exact|regex|schema|contains|judge, ...}`:
  `exact` and `contains` take `value` (a string, or a list of strings of which any may match) and
  `ignoreCase` (default true); both compare with runs of whitespace folded to one space, and
  `exact` also ignores leading and trailing whitespace. `regex` takes `pattern` (Python syntax,
  searched anywhere in the answer) and `ignoreCase` (default false). `schema` takes `schema` (a
  JSON Schema) that the answer, parsed as JSON, must satisfy; a ```json fence around the answer is
  allowed. `judge` takes optional `criteria` (what a good answer does) and `lane` (the lane that
  grades; otherwise the default judge lane).
- `expected` or `answer` at the top level of the line (a string, a number or a list of them):
  the same as `check: {type: contains, value: ...}`, because model answers explain themselves
  around the reference answer rather than reproducing it exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

CHECK_TYPES = ("exact", "regex", "schema", "contains", "judge")

_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class CheckError(ValueError):
    """A check declaration that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Check:
    """One declared check; which fields are set depends on `type` (see the module docstring)."""

    type: str
    values: tuple[str, ...] = ()
    pattern: str | None = None
    schema: Mapping[str, Any] | None = field(default=None, compare=False)
    ignore_case: bool = True
    criteria: str | None = None
    lane: str | None = None

    def describe(self) -> str:
        """A short human description for reports, e.g. `contains "42"`."""
        if self.type in ("exact", "contains"):
            return f"{self.type} " + " or ".join(json.dumps(v) for v in self.values)
        if self.type == "regex":
            return f"regex /{self.pattern}/"
        if self.type == "judge":
            return f"judge ({self.lane or 'default lane'})"
        return "schema"


@dataclass(frozen=True)
class Verdict:
    """Whether an answer passed, and why. `graded` is False when no grade could be given (the
    judge lane failed or its reply was unreadable); such an answer counts as not passing."""

    passed: bool
    reason: str
    graded: bool = True


# ---------------------------------------------------------------------------------------------
# Parsing.


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise CheckError(f"{where}: must be a string, a number or a list of them")
        out.append(str(item))
    if not out or not all(s.strip() for s in out):
        raise CheckError(f"{where}: must not be empty")
    return tuple(out)


def _flag(obj: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise CheckError(f"{where}.{key}: must be true or false")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise CheckError(f"{where}.{key}: must be a non-empty string")
    return value


def _parse_object(obj: Any) -> Check:
    if not isinstance(obj, Mapping):
        raise CheckError('check: must be an object such as {"type": "contains", "value": ...}')
    kind = obj.get("type")
    if kind not in CHECK_TYPES:
        raise CheckError(f"check.type: must be one of {', '.join(CHECK_TYPES)}, got {kind!r}")
    if kind in ("exact", "contains"):
        if "value" not in obj:
            raise CheckError(f"check.value: is required for a {kind} check")
        return Check(
            type=kind,
            values=_strings(obj["value"], "check.value"),
            ignore_case=_flag(obj, "ignoreCase", True, "check"),
        )
    if kind == "regex":
        return _parse_regex(obj)
    if kind == "schema":
        return _parse_schema(obj)
    return Check(
        type="judge",
        criteria=_optional_text(obj, "criteria", "check"),
        lane=_optional_text(obj, "lane", "check"),
    )


def _parse_regex(obj: Mapping[str, Any]) -> Check:
    pattern = obj.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise CheckError("check.pattern: a regex check needs a non-empty pattern string")
    ignore_case = _flag(obj, "ignoreCase", False, "check")
    try:
        re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise CheckError(f"check.pattern: not a valid regular expression: {exc}") from exc
    return Check(type="regex", pattern=pattern, ignore_case=ignore_case)


def _parse_schema(obj: Mapping[str, Any]) -> Check:
    schema = obj.get("schema")
    if not isinstance(schema, Mapping):
        raise CheckError("check.schema: a schema check needs a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise CheckError(f"check.schema: not a valid JSON Schema: {exc.message}") from exc
    return Check(type="schema", schema=schema)


def parse_check(line: Mapping[str, Any]) -> Check | None:
    """The check a JSONL line declares, or None when it declares none (see module docstring)."""
    if line.get("check") is not None:
        return _parse_object(line["check"])
    for key in ("expected", "answer"):
        if line.get(key) is not None:
            return Check(type="contains", values=_strings(line[key], key))
    return None


# ---------------------------------------------------------------------------------------------
# Deterministic verdicts.


def _norm(text: str, ignore_case: bool) -> str:
    folded = _WS.sub(" ", text).strip()
    return folded.casefold() if ignore_case else folded


def _json_answer(answer: str) -> Any:
    text = answer.strip()
    fenced = _FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def run_check(check: Check, answer: str) -> Verdict:
    """Judge an answer against a deterministic check (every type but `judge`)."""
    if check.type in ("exact", "contains"):
        got = _norm(answer, check.ignore_case)
        for want in check.values:
            wanted = _norm(want, check.ignore_case)
            if (got == wanted) if check.type == "exact" else (wanted in got):
                return Verdict(True, f"{check.type} match")
        verb = "equal" if check.type == "exact" else "contain"
        wanted = " or ".join(json.dumps(v) for v in check.values)
        return Verdict(False, f"answer does not {verb} {wanted}")
    if check.type == "regex":
        flags = re.IGNORECASE if check.ignore_case else 0
        if re.search(check.pattern or "", answer, flags):
            return Verdict(True, "regex match")
        return Verdict(False, f"answer does not match /{check.pattern}/")
    if check.type == "schema":
        return _schema_verdict(check, answer)
    raise ValueError(f"run_check cannot grade a {check.type} check; a judge lane does")


def _schema_verdict(check: Check, answer: str) -> Verdict:
    try:
        doc = _json_answer(answer)
    except ValueError:
        return Verdict(False, "answer is not JSON")
    schema = dict(check.schema or {})
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        return Verdict(False, f"answer breaks the schema: {error.message}")
    return Verdict(True, "schema valid")
