"""Grading by a judge lane: the request it is sent, and how its reply becomes a verdict.

`laneway.evaluation.live` calls `judge_body` for every answer whose check is `judge` (or that has
no declared check), sends it to the judge lane, and reads the reply with `read_verdict`. Pure code.

The judge lane is, in this order: the check's own `lane`; else the policy lane with the highest
output price (the strongest the team pays for). A lane grading its own answers is biased towards
them; declare `check.lane` when that matters, or prefer deterministic checks.
"""

from __future__ import annotations

import re
from typing import Any

from laneway.evaluation.checks import Check, Verdict
from router_sidecar.config import RouterConfig

DEFAULT_CRITERIA = (
    "The answer addresses the request correctly and completely, without inventing facts, and "
    "does not refuse or hedge when the request is reasonable."
)
# Long requests and answers are cut so a grading call stays cheap; the cut is marked.
MAX_REQUEST_CHARS = 6_000
MAX_ANSWER_CHARS = 8_000
JUDGE_MAX_TOKENS = 200

_VERDICT = re.compile(r"^\W*(PASS|FAIL)\b", re.IGNORECASE)


def default_judge_lane(config: RouterConfig) -> str:
    """The lane with the highest output price (then input price, then name) in the policy."""
    return max(
        config.lanes.values(),
        key=lambda lane: (lane.output_per_million, lane.input_per_million, lane.name),
    ).name


def judge_lane_for(check: Check | None, config: RouterConfig) -> str:
    if check is not None and check.lane:
        return check.lane
    return default_judge_lane(config)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def judge_body(request: str, answer: str, criteria: str | None) -> dict[str, Any]:
    """The chat completion body that asks a judge lane to grade one answer."""
    instructions = (
        "You grade answers from an AI assistant. Reply with exactly one word on the first line, "
        "PASS or FAIL, then one short sentence saying why.\n\n"
        f"Criteria: {criteria or DEFAULT_CRITERIA}"
    )
    content = (
        f"<request>\n{_cut(request, MAX_REQUEST_CHARS)}\n</request>\n\n"
        f"<answer>\n{_cut(answer, MAX_ANSWER_CHARS)}\n</answer>"
    )
    return {
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": content},
        ],
        "max_tokens": JUDGE_MAX_TOKENS,
        "temperature": 0,
    }


def read_verdict(reply: str) -> Verdict:
    """PASS or FAIL from the first word of a judge's reply; anything else fails, saying so."""
    found = _VERDICT.match(reply)
    if found is None:
        return Verdict(False, "not graded: judge reply did not start with PASS or FAIL", False)
    reason = reply[found.end() :].strip().splitlines()
    why = reason[0].strip(" :.-") if reason else ""
    passed = found.group(1).upper() == "PASS"
    return Verdict(passed, f"judge: {why}" if why else f"judge said {found.group(1).upper()}")
