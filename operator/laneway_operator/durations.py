"""Duration strings in custom resources (`5s`, `200ms`, `1h30m`) and their millisecond values.

The CRDs accept a duration only if it matches `DURATION_PATTERN` (a CEL rule on each field), and
the compiler (`laneway_operator.compiler`) turns every accepted string into milliseconds with
`parse_duration`, so the router config holds plain integers. The pattern is a subset of what Go's
`time.ParseDuration` reads, which lets CEL rules compare durations with `duration(...)`.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
MAX_DURATION_CHARS = 32

_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
_HINT = "use a number and a unit (ms, s, m, h), for example 500ms, 5s, 2m or 1h30m"


def parse_duration(text: object) -> int:
    """Milliseconds in a duration string such as `1.5s` or `1m30s`, rounded to a whole ms.

    Raises ValueError, with a message that says what a valid duration looks like, for anything
    else (numbers without a unit, other units, empty strings, non-strings).
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a duration string, got {type(text).__name__}; {_HINT}")
    if len(text) > MAX_DURATION_CHARS or not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration; {_HINT}")
    total = sum(float(num) * _UNIT_MS[unit] for num, unit in _PART.findall(text))
    return round(total)
