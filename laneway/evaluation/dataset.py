"""The labelled prompt file of `laneway eval`: one JSON object per line, read into `EvalPrompt`s.

`laneway.cmd_eval` calls `load_prompts`; every other evaluation module works on its result.
A line needs `id` and `prompt`; everything else is optional:

- The task family (the unit of the routing map) is the first of `family`, `source_category`,
  `task` and `category` that the line carries, else `unlabelled`.
- `tier`, `task`, `risk` and `latency_budget_ms` (top level, or inside `meta`) become the request
  hints the sidecar reads from `x-laneway-*` headers, validated the same way.
- `system` becomes a system message before the user prompt.
- `tools` (an OpenAI tools list) is sent as is; without it, `meta.functions` (a list of function
  names, as in BFCL) becomes a list of parameterless function tools with those names, so the
  request carries tools exactly when the source offered some.
- `check`, `expected` or `answer` declare how an answer is judged (see `checks`).
- Every other scalar field, top level or inside `meta` (shown as `meta.<key>`), is a label; the
  report breaks routes down by the labels that have between 2 and 12 distinct values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from laneway.errors import BadInput
from laneway.evaluation.checks import Check, CheckError, parse_check
from router_sidecar.signals import HintError, Hints, parse_hints

FAMILY_KEYS = ("family", "source_category", "task", "category")
UNLABELLED = "unlabelled"
HINT_KEYS = {
    "tier": "x-laneway-tier",
    "task": "x-laneway-task",
    "risk": "x-laneway-risk",
    "latency_budget_ms": "x-laneway-latency-budget-ms",
}
# Fields with a meaning of their own, never shown as labels.
RESERVED = frozenset(
    {"id", "prompt", "meta", "license", "source", "check", "expected", "answer", "tools", "system"}
)
_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt of the set, with everything the evaluation needs from its line."""

    line: int
    id: str
    text: str
    family: str
    hints: Hints
    labels: Mapping[str, str]
    tools: tuple[Mapping[str, Any], ...] = ()
    system: str | None = None
    check: Check | None = None

    def request_body(self, model: str = "auto") -> dict[str, Any]:
        """The OpenAI chat completion body an application would send for this prompt."""
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.text})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if self.tools:
            body["tools"] = [dict(tool) for tool in self.tools]
        return body


def load_prompts(path: str, limit: int | None = None) -> list[EvalPrompt]:
    """Read a JSONL prompt file; raise BadInput naming the file and line of the first problem."""
    if limit is not None and limit < 1:
        raise BadInput(f"--limit: must be 1 or more, got {limit}")
    try:
        with open(path, encoding="utf-8") as fh:
            prompts = _read_lines(path, fh, limit)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the prompt file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: is not UTF-8 text; save the prompt file as UTF-8") from exc
    if not prompts:
        raise BadInput(f"{path}: holds no prompts; write one JSON object per line")
    return prompts


def _read_lines(path: str, lines: Any, limit: int | None) -> list[EvalPrompt]:
    prompts: list[EvalPrompt] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        prompt = _parse_line(f"{path} line {number}", number, raw)
        if prompt.id in seen:
            raise BadInput(
                f"{path} line {number}: id {prompt.id!r} is already used on line "
                f"{seen[prompt.id]}; ids must be unique"
            )
        seen[prompt.id] = number
        prompts.append(prompt)
        if limit is not None and len(prompts) >= limit:
            break
    return prompts


def _parse_line(where: str, number: int, raw: str) -> EvalPrompt:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not valid JSON ({exc.msg}); write one object per line") from exc
    if not isinstance(obj, dict):
        raise BadInput(f'{where}: must be a JSON object with "id" and "prompt"')
    for key in ("id", "prompt"):
        if key not in obj:
            raise BadInput(f'{where}: missing {key!r}; every line needs "id" and "prompt"')
    ident, text = obj["id"], obj["prompt"]
    if isinstance(ident, bool) or not isinstance(ident, str | int) or not str(ident).strip():
        raise BadInput(f'{where}: "id" must be a non-empty string or an integer')
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f'{where}: "prompt" must be a non-empty string')
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    try:
        check = parse_check(obj)
        hints = _hints(obj, meta)
    except (CheckError, HintError) as exc:
        raise BadInput(f"{where}: {exc}") from exc
    return EvalPrompt(
        line=number,
        id=str(ident),
        text=text,
        family=_family(obj),
        hints=hints,
        labels=_labels(obj, meta),
        tools=_tools(where, obj, meta),
        system=obj["system"] if isinstance(obj.get("system"), str) else None,
        check=check,
    )


def _family(obj: Mapping[str, Any]) -> str:
    for key in FAMILY_KEYS:
        value = obj.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return UNLABELLED


def _hints(obj: Mapping[str, Any], meta: Mapping[str, Any]) -> Hints:
    headers = {}
    for key, header in HINT_KEYS.items():
        value = obj.get(key, meta.get(key))
        if isinstance(value, str | int) and not isinstance(value, bool):
            headers[header] = str(value)
    return parse_hints(headers)


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _labels(obj: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, str]:
    labels = {}
    for key, value in obj.items():
        shown = _scalar(value)
        if key not in RESERVED and key not in FAMILY_KEYS[:2] and shown is not None:
            labels[key] = shown
    for key, value in meta.items():
        shown = _scalar(value)
        if shown is not None:
            labels[f"meta.{key}"] = shown
    return labels


def _tools(where: str, obj: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[dict, ...]:
    tools = obj.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise BadInput(f'{where}: "tools" must be a list of OpenAI tool objects')
        return tuple(tools)
    names = meta.get("functions")
    if not isinstance(names, list):
        return ()
    return tuple(
        {
            "type": "function",
            "function": {
                # Providers accept only [A-Za-z0-9_-] in names; BFCL names carry dots.
                "name": _TOOL_NAME_BAD.sub("_", name)[:64],
                "parameters": {"type": "object", "properties": {}},
            },
        }
        for name in names
        if isinstance(name, str) and name.strip()
    )
