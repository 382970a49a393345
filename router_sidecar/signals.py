"""Request signals: what the routing decision knows about one chat completion request.

The sidecar's request handler, `POST /v1/route/explain`, `laneway explain` and `laneway eval` call
`parse_hints` on the request headers and `extract_signals` on the OpenAI-shaped body; the result
feeds `router_sidecar.decision.decide`. Everything here is pure (no I/O) and runs once per request.

How each signal is read (this is the documented contract for policy authors):

- Lengths (`prompt_chars`, `prompt_tokens`) count the text of every message, whatever its role:
  string content, `text` parts, tool-call arguments and legacy `function_call` arguments.
  Tokens are estimated, not counted: see `estimate_tokens`.
- Keywords, code blocks and files are read from `user` messages only, so a system prompt that
  mentions "security" does not send every request to an expensive route.
- A code block is a ``` fence in user text.
- `files` counts attachments plus distinct file names mentioned in user text. An attachment is a
  user content part of type `image_url`, `input_image`, `file` or `input_file`. A file name is a
  path with a directory and an extension (`src/app.py`, `./docs/a.txt`), or a bare name whose
  extension is a well-known file type (`main.go`, `report.pdf`, `README.md`). URLs are ignored, as
  are a few framework names that look like files (`Node.js`). Words such as "attached" alone do
  not count: only an actual attachment or a file name does.
- `needs_vision` is set by any image part in any message.
- Hints come from `x-laneway-*` headers; tier, task and risk are lower-cased so that policies match
  them case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

T = TypeVar("T")

HINT_PREFIX = "x-laneway-"
TIER_HEADER = "x-laneway-tier"
TASK_HEADER = "x-laneway-task"
RISK_HEADER = "x-laneway-risk"
LATENCY_HEADER = "x-laneway-latency-budget-ms"
TOOL_FAILURES_HEADER = "x-laneway-tool-failures"

MAX_LATENCY_BUDGET_MS = 86_400_000
MAX_TOOL_FAILURES = 1_000

_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_INT_RE = re.compile(r"[0-9]{1,12}")

ATTACHMENT_PART_TYPES = frozenset({"image_url", "input_image", "file", "input_file"})
IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})

# Bare names with one of these extensions count as files; a name with a directory always counts.
_EXTENSION_LIST = (
    "py pyi ipynb js mjs cjs ts tsx jsx go rs java kt kts scala c h cc cpp cxx hpp cs rb php swift "
    "sh bash zsh ps1 sql json jsonl yaml yml toml ini cfg conf xml html htm css scss vue svelte md "
    "rst txt csv tsv log pdf doc docx xls xlsx ppt pptx png jpg jpeg gif svg webp proto tf gradle "
    "lock zip tar gz lua pl ex exs erl hs dart sol tex"
)
FILE_EXTENSIONS = frozenset(_EXTENSION_LIST.split())
# Product names that look like file names but are not.
NOT_FILES = frozenset({"node.js", "vue.js", "next.js", "nuxt.js", "react.js", "three.js", "d3.js"})

_WORD_EDGES = ".,;:!?()[]{}<>\"'`*"
_FILE_RE = re.compile(
    r"(?<![\w/.-])"  # start of a name, not the middle of one
    r"((?:\.{0,2}/)?(?:[\w-][\w.-]*/)*[\w-][\w.-]*\.([A-Za-z][A-Za-z0-9]{0,7}))"
    r"(?![\w/-])"
)
# Every name _FILE_RE finds has a dot followed by a letter, where its extension starts.
_EXTENSION_DOT = re.compile(r"\.[A-Za-z]")
# A tool result that reports a failure: text starting with error, exception, traceback, failed
# or failure (a word of its own, any case), or a JSON object whose first key is "error" with a
# value (not null, false or "").
_TOOL_ERROR_RE = re.compile(
    r"\s*(?:(?:error|exception|traceback|failed|failure)\b"
    r'|\{\s*"error"\s*:(?!\s*(?:null\b|false\b|"")))',
    re.IGNORECASE,
)


def build_frozen(cls: type[T], fields: dict[str, Any]) -> T:
    """An instance of the frozen dataclass `cls` holding `fields`, which must name every field.

    The same object the generated `__init__` makes, at a third of the cost: that one sets each
    field through `object.__setattr__` to get past the frozen check, which for the 16 to 21
    fields of `Signals` and `Decision` costs more than computing them. For hot paths only.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


class HintError(ValueError):
    """A request hint header holds a value the router cannot use; the message names the header."""


@dataclass(frozen=True)
class Hints:
    """Optional per-request hints sent by the application as `x-laneway-*` headers."""

    tier: str | None = None
    task: str | None = None
    risk: str | None = None
    latency_budget_ms: int | None = None
    tool_failures: int = 0


@dataclass(frozen=True)
class Signals:
    """Everything the routing decision may look at. `user_text` never leaves the process."""

    prompt_chars: int
    prompt_tokens: int
    has_code_block: bool
    files: int
    user_text: str
    tier: str | None
    task: str | None
    risk: str | None
    has_tools: bool
    tool_names: tuple[str, ...]
    needs_json_schema: bool
    needs_vision: bool
    streaming: bool
    max_tokens: int | None
    latency_budget_ms: int | None
    tool_failures: int
    # Failed tool results in the messages since the last user message (`tool_failures` is the
    # larger of this and the x-laneway-tool-failures hint).
    tool_failures_seen: int = 0

    @cached_property
    def folded_text(self) -> str:
        """`user_text` case-folded once, for fast keyword pre-checks."""
        return self.user_text.casefold()

    def as_dict(self) -> dict[str, object]:
        """The signals for explain output and the decision log; never the prompt text."""
        return {
            "promptChars": self.prompt_chars,
            "promptTokens": self.prompt_tokens,
            "hasCodeBlock": self.has_code_block,
            "files": self.files,
            "tier": self.tier,
            "task": self.task,
            "risk": self.risk,
            "hasTools": self.has_tools,
            "toolNames": list(self.tool_names),
            "needsJsonSchema": self.needs_json_schema,
            "needsVision": self.needs_vision,
            "streaming": self.streaming,
            "maxTokens": self.max_tokens,
            "latencyBudgetMs": self.latency_budget_ms,
            "toolFailures": self.tool_failures,
            "toolFailuresInMessages": self.tool_failures_seen,
        }


# ---------------------------------------------------------------------------------------------
# Hints.


def _shown(value: str) -> str:
    """A header value quoted for an error message, cut short so a huge value stays small."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _token_hint(header: str, value: str) -> str:
    if not _TOKEN_RE.fullmatch(value):
        raise HintError(
            f"{header}: must be a short name (letters, digits, '.', '_' or '-', at most 64 "
            f"characters, starting with a letter or digit), got {_shown(value)}"
        )
    return value.lower()


def _int_hint(header: str, value: str, low: int, high: int, what: str) -> int:
    number = int(value) if _INT_RE.fullmatch(value) else None
    if number is None or not low <= number <= high:
        raise HintError(f"{header}: must be {what} from {low} to {high}, got {_shown(value)}")
    return number


_NO_HINTS = Hints()


def parse_hints(headers: Mapping[str, str]) -> Hints:
    """Read the `x-laneway-*` hint headers (names case-insensitive; empty values are absent)."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        if name[:1] in "xX":  # most requests carry none: skip the others cheaply
            lowered = name.lower()
            if lowered.startswith(HINT_PREFIX) and value.strip():
                found[lowered] = value.strip()
    if not found:
        return _NO_HINTS

    def token(header: str) -> str | None:
        return _token_hint(header, found[header]) if header in found else None

    latency = None
    if LATENCY_HEADER in found:
        latency = _int_hint(
            LATENCY_HEADER, found[LATENCY_HEADER], 1, MAX_LATENCY_BUDGET_MS, "whole milliseconds"
        )
    failures = 0
    if TOOL_FAILURES_HEADER in found:
        failures = _int_hint(
            TOOL_FAILURES_HEADER, found[TOOL_FAILURES_HEADER], 0, MAX_TOOL_FAILURES, "a count"
        )
    return Hints(
        tier=token(TIER_HEADER),
        task=token(TASK_HEADER),
        risk=token(RISK_HEADER),
        latency_budget_ms=latency,
        tool_failures=failures,
    )


# ---------------------------------------------------------------------------------------------
# Body.


def estimate_tokens(text: str) -> int:
    """Estimate tokens without a tokenizer: 4 ASCII characters per token, 1 per other character.

    English prose and code run at roughly 4 characters per token; CJK and other non-ASCII text
    runs closer to one token per character, so counting it that way errs on the large side, which
    is the safe side for context-window checks.
    """
    if text.isascii():
        return -(-len(text) // 4)
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 4) + (len(text) - ascii_chars)


def _parts(content: Any) -> Iterator[tuple[str, str]]:
    """(part type, text) for a message's content: a string, or a list of typed parts."""
    if isinstance(content, str):
        yield "text", content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                kind, text = part.get("type"), part.get("text")
                yield (
                    kind if isinstance(kind, str) else "",
                    text if isinstance(text, str) else "",
                )


def _call_arguments(message: Mapping[str, Any]) -> Iterator[str]:
    """Argument strings of an assistant message's tool calls (and legacy function_call)."""
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
            yield function["arguments"]
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping) and isinstance(legacy.get("arguments"), str):
        yield legacy["arguments"]


def count_files(user_text: str) -> int:
    """Distinct file names mentioned in user text (see the module docstring for the rule)."""
    if _EXTENSION_DOT.search(user_text) is None:
        return 0  # no file name (they all need one), as in most prompts
    names = set()
    # Only distinct whitespace-separated words with an inner dot can hold a file name; finding
    # those with C-level string operations first keeps the regex off most of a long prompt.
    for word in {w for w in user_text.split() if "." in w}:
        if "://" in word or "." not in word.strip(_WORD_EDGES):
            continue
        for match in _FILE_RE.finditer(word):
            name, ext = match.group(1).lower(), match.group(2).lower()
            if name not in NOT_FILES and ("/" in name or ext in FILE_EXTENSIONS):
                names.add(name.removeprefix("./"))
    return len(names)


def _tool_names(body: Mapping[str, Any]) -> tuple[str, ...]:
    if "tools" not in body and "functions" not in body:
        return ()
    names: list[str] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    functions = body.get("functions")
    for function in functions if isinstance(functions, list) else ():
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return tuple(names)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _tool_failed(content: Any) -> bool:
    """Whether a tool message reports a failure (see `_TOOL_ERROR_RE`); its first text decides."""
    for _, text in _parts(content):
        return _TOOL_ERROR_RE.match(text) is not None
    return False


def _needs_json(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    if fmt is None:  # the usual case, without the Mapping check (slow for a non-mapping)
        return False
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object")


def extract_signals(body: Mapping[str, Any], hints: Hints) -> Signals:
    """Read the routing signals of one OpenAI chat completion request body.

    Tolerant of odd shapes: a malformed message or part is skipped rather than raising, because
    validating the body is the request handler's job and explain must work on partial bodies.
    """
    chars = tokens = attachments = failed_tools = 0
    vision = False
    user_texts: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        # Parsed JSON holds dicts: checking for dict first skips the slow Mapping ABC check.
        if not isinstance(message, (dict, Mapping)):
            continue
        role = message.get("role")
        is_user = role == "user"
        content = message.get("content")
        if is_user:
            failed_tools = 0  # a new turn: count the failures of this agent step only
        elif role == "tool" or role == "function":
            failed_tools += _tool_failed(content)
        if isinstance(content, str):  # the usual shape, without the generator
            if is_user and content:
                user_texts.append(content)
            chars += len(content)
            tokens += estimate_tokens(content)
        else:
            texts = []
            for kind, text in _parts(content):
                texts.append(text)
                if kind in IMAGE_PART_TYPES:
                    vision = True
                if is_user and kind in ATTACHMENT_PART_TYPES:
                    attachments += 1
            if is_user:
                user_texts.extend(t for t in texts if t)
            for text in texts:
                chars += len(text)
                tokens += estimate_tokens(text)
        if "tool_calls" in message or "function_call" in message:
            for text in _call_arguments(message):
                chars += len(text)
                tokens += estimate_tokens(text)

    user_text = "\n".join(user_texts)
    names = _tool_names(body)
    return build_frozen(
        Signals,
        {
            "prompt_chars": chars,
            "prompt_tokens": tokens,
            "has_code_block": "```" in user_text,
            "files": attachments + count_files(user_text),
            "user_text": user_text,
            "tier": hints.tier,
            "task": hints.task,
            "risk": hints.risk,
            "has_tools": bool(names) or bool(body.get("tools")) or bool(body.get("functions")),
            "tool_names": names,
            "needs_json_schema": _needs_json(body),
            "needs_vision": vision,
            "streaming": body.get("stream") is True,
            "max_tokens": _max_tokens(body),
            "latency_budget_ms": hints.latency_budget_ms,
            "tool_failures": max(hints.tool_failures, failed_tools),
            "tool_failures_seen": failed_tools,
        },
    )
