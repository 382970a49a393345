"""The `selfCheck` escalation trigger's request and the reading of its reply.

After an answer has passed every other check, the engine (`router_sidecar.engine`) may ask the
policy's `escalation.selfCheck.lane` whether the answer fully and correctly addresses the
request. The reply must start with PASS or FAIL and give one short reason; FAIL escalates the
answer, anything else serves it. The prompt holds the request's last user message and the
answer, which is what the checking lane needs and no more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from router_sidecar.config import SelfCheck

INSTRUCTIONS = (
    "You check an assistant's answer before it is sent to the user. Reply PASS if the answer "
    "fully and correctly addresses the request, or FAIL if it is incomplete, wrong, evasive, or "
    "lacks evidence the request asks for. Start your reply with PASS or FAIL, then give one "
    "short reason."
)
# Enough of the request and the answer for a verdict, without sending a whole document twice.
MAX_SHOWN_CHARS = 8_000
_VERDICT_RE = re.compile(r"\W*(PASS|FAIL)\b\W*(.*)", re.IGNORECASE | re.DOTALL)


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the request's last user message (text parts joined)."""
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    p["text"] for p in content
                    if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                )
    return ""


def answer_text(answer: Mapping[str, Any]) -> str:
    """The text of a chat completion's first choice, "" when it has none (e.g. tool calls)."""
    choices = answer.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return content if isinstance(content, str) else ""


def _shown(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "\n[cut short]"


def check_body(check: SelfCheck, request: str, answer: str) -> dict[str, Any]:
    """The chat completion body that asks the checking lane for a verdict."""
    ask = f"Request:\n<<<\n{_shown(request)}\n>>>\n\nAnswer:\n<<<\n{_shown(answer)}\n>>>"
    if check.instructions:
        ask += f"\n\nA good answer must also: {check.instructions}"
    return {
        "model": "self-check",
        "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": ask}],
        "max_tokens": check.max_tokens,
        "temperature": 0,
    }


def read_verdict(reply: str) -> tuple[bool | None, str]:
    """(True for PASS, False for FAIL, None when unreadable; the reason, cut to 200 chars)."""
    match = _VERDICT_RE.match(reply)
    if match is None:
        return None, reply.strip()[:200]
    reason = " ".join(match.group(2).split())[:200]
    return match.group(1).upper() == "PASS", reason
