"""What the simulated provider is told to do: its modes and the settings `/_control` changes.

`SimulatedProvider` (in `server`) holds one frozen `Settings` and swaps it whole on every change,
so a request handler that takes one snapshot sees a consistent set even when another thread
changes the mode. `apply_control` validates a `/_control` body; it is pure and has no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Every mode the simulator understands. The docs (docs/simulate-provider.md) describe each one.
MODES = (
    "ok",
    "error500",
    "overloaded",
    "ratelimit",
    "timeout",
    "refuse",
    "truncate",
    "invalid_json",
    "uncertain",
    "context_overflow",
    "down",
    "stream_error",
)

# Keys `/_control` accepts; anything else is a typo we report rather than ignore.
CONTROL_KEYS = frozenset(
    {
        "mode",
        "latency_ms",
        "chunk_delay_ms",
        "answer",
        "tool_call",
        "context_window",
        "reset_count",
        "reset",
    }
)


class ControlError(ValueError):
    """A `/_control` body or `set_mode` call asked for something the simulator cannot do."""


@dataclass(frozen=True)
class Settings:
    """The behaviour of the simulated provider at one moment.

    `answer` replaces the default answer text; `tool_call` forces a tool call whenever the request
    offers tools; `context_window` (tokens) makes longer prompts fail with the provider's own
    context-length error even in mode `ok`.
    """

    mode: str = "ok"
    latency_ms: float = 0
    chunk_delay_ms: float = 0
    answer: str | None = None
    tool_call: bool = False
    context_window: int | None = None


def apply_control(current: Settings, initial: Settings, body: Mapping[str, Any]) -> Settings:
    """Return the settings after a `/_control` body; `reset` starts again from `initial`."""
    unknown = sorted(set(body) - CONTROL_KEYS)
    if unknown:
        allowed = ", ".join(sorted(CONTROL_KEYS))
        raise ControlError(f"unknown control key(s) {', '.join(unknown)}; allowed: {allowed}")
    base = initial if _flag(body, "reset") else current
    changes: dict[str, Any] = {}

    if "mode" in body:
        changes["mode"] = _mode(body["mode"])
    for key in ("latency_ms", "chunk_delay_ms"):
        if key in body:
            changes[key] = _non_negative(key, body[key])
    if "answer" in body:
        changes["answer"] = _optional_str("answer", body["answer"])
    if "tool_call" in body:
        changes["tool_call"] = _flag(body, "tool_call")
    if "context_window" in body:
        changes["context_window"] = _optional_positive_int("context_window", body["context_window"])
    return replace(base, **changes)


def wants_count_reset(body: Mapping[str, Any]) -> bool:
    """True when the body asks to zero the request counters (`reset_count` or `reset`)."""
    return _flag(body, "reset_count") or _flag(body, "reset")


def _mode(value: Any) -> str:
    if value not in MODES:
        raise ControlError(f"mode must be one of {', '.join(MODES)}; got {value!r}")
    return str(value)


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ControlError(f"{key} must be true or false; got {value!r}")
    return value


def _non_negative(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ControlError(f"{key} must be a number of milliseconds >= 0; got {value!r}")
    return value


def _optional_str(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{key} must be a string or null; got {value!r}")
    return value


def _optional_positive_int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ControlError(f"{key} must be a positive number of tokens or null; got {value!r}")
    return value
