"""The `selfCheck` escalation trigger: when to ask, the call, and the reading of the reply.

After an answer has passed every other check, the engine (`router_sidecar.engine`) asks its
`SelfChecker` whether the policy's `escalation.selfCheck.lane` should judge it, and if so asks
that lane whether the answer fully and correctly addresses the request. The reply must start
with PASS or FAIL and give one short reason; FAIL escalates the answer, anything else serves it.
The prompt holds the request's last user message and the answer, which is what the checking lane
needs and no more.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from router_sidecar import errors, fastjson
from router_sidecar.bookkeeping import LaneAnswer, Run
from router_sidecar.config import Lane, SelfCheck
from router_sidecar.decision import escalation_target
from router_sidecar.metrics import Metrics
from router_sidecar.providers import adapter_for
from router_sidecar.providers.base import UpstreamRequest
from router_sidecar.upstream import Response, UpstreamError

Post = Callable[[Lane, UpstreamRequest, float], Awaitable[Response]]

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


class SelfChecker:
    """Asks a policy's selfCheck lane about finished answers, through the engine's own provider
    client (`post`), keys and circuit states."""

    def __init__(
        self,
        post: Post,
        api_key: Callable[[Lane], str | None],
        lane_unavailable: Callable[[str], str | None],
        metrics: Metrics,
    ) -> None:
        self._post, self._api_key = post, api_key
        self._lane_unavailable, self._metrics = lane_unavailable, metrics

    def applies(self, run: Run, route: str, got: LaneAnswer) -> bool:
        """Whether to ask about this answer: only when a FAIL could escalate it (the check is a
        paid call) and the answer has text to judge."""
        esc = run.config.escalation
        check = esc.self_check
        return (
            check is not None
            and "selfCheck" in esc.triggers
            and run.config.mode == "enforce"
            and run.decision.forced_kind != "lane"
            and escalation_target(run.config, route) is not None
            and run.escalations < esc.max_escalations
            and self._lane_unavailable(check.lane) is None
            and bool(answer_text(got.answer).strip())
        )

    async def ask(self, run: Run, route: str, got: LaneAnswer) -> tuple[str, str] | None:
        """("selfCheck", detail) when the lane replies FAIL, else None. The call is paid for
        and counted like any answer; when it fails the answer is served."""
        check = run.config.escalation.self_check
        assert check is not None
        lane = run.config.lanes[check.lane]
        adapter = adapter_for(lane.provider.type)
        key = self._api_key(lane)
        body = check_body(check, last_user_text(run.body), answer_text(got.answer))
        req = adapter.build_request(lane, body, key, stream=False)
        started = time.monotonic()
        limit_s = lane.total_ms / 1000
        if run.budgeted:
            limit_s = min(limit_s, max(run.deadline - started, 0.001))
        verdict, detail = None, ""
        try:
            resp = await self._post(lane, req, limit_s)
            raw = resp.read_now()
            if raw is None:
                raw = await resp.read()
            if resp.status >= 300:
                raise ValueError(f"HTTP {resp.status}")
            reply, usage = adapter.parse_answer(fastjson.loads(raw))
        except (UpstreamError, TimeoutError, ValueError) as exc:
            detail = errors.redact(str(exc) or type(exc).__name__, secret=key)
        else:
            text = answer_text(reply)
            chars = len(text) if usage.output_tokens is None else 0
            run.account(lane, route, usage, chars, self._metrics)
            # The reason stays here: it may quote the request, and decision lines never do.
            verdict, _ = read_verdict(text)
            detail = "" if verdict is not None else "the reply did not start with PASS or FAIL"
        elapsed = time.monotonic() - started
        run.upstream_s += elapsed
        run.record.self_checks += ({
            "lane": lane.name, "route": route, "ms": round(elapsed * 1000, 1), "detail": detail,
            "verdict": {True: "pass", False: "fail", None: "error"}[verdict],
        },)
        outcome = "ok" if verdict is not None else "error"
        self._metrics.observe(self._metrics.upstream_duration, (lane.name, outcome), elapsed)
        if verdict is False:
            return "selfCheck", f"the self-check by lane {lane.name} failed the answer"
        return None
