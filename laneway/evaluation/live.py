"""Live evaluation: send every prompt to every lane of the policy and grade each answer.

`laneway.cmd_eval --live` calls `read_api_keys` and then `run_live`; `routing_map` turns the
result into the per-family routing map. Lanes are called directly, not through a sidecar, with the
sidecar's own provider adapters (`router_sidecar.providers.adapter_for`), so an Anthropic lane is
spoken to exactly as the sidecar would. Each answer is graded by its prompt's check (see
`checks`), or by a judge lane (see `judges`), and also run through the sidecar's escalation checks
(`router_sidecar.checks.check_answer`) so the routing map can tell whether escalation would have
noticed a failure.

Calls run concurrently, at most `DEFAULT_CONCURRENCY` at a time (grading calls included), each
with the lane's own connect and total timeouts. A lane the sidecar would never send a prompt to
(missing capability, context window, budget) is not called for it and counts as not passing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from laneway.evaluation.checks import Verdict, run_check
from laneway.evaluation.judges import judge_body, judge_lane_for, read_verdict
from laneway.evaluation.offline import RoutedPrompt
from router_sidecar.checks import check_answer
from router_sidecar.config import Lane, RouterConfig
from router_sidecar.decision import screen_lanes
from router_sidecar.errors import classify_exception, classify_status, malformed_response
from router_sidecar.providers import adapter_for
from router_sidecar.providers.base import Usage
from router_sidecar.secrets import SecretStore
from router_sidecar.signals import estimate_tokens, extract_signals

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LaneCall:
    """The raw outcome of one call: an OpenAI chat completion, or an error."""

    completion: Mapping[str, Any] | None
    usage: Usage
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class LaneAnswer:
    """One prompt answered (or not) by one lane, graded."""

    prompt_id: str
    family: str
    lane: str
    called: bool
    passed: bool
    reason: str
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost: float
    error: str | None
    # The escalation trigger the answer would set off in the sidecar, e.g. "uncertain".
    trigger: str | None
    judge_lane: str | None = None
    judge_cost: float = 0.0
    graded: bool = True


# ---------------------------------------------------------------------------------------------
# Keys.


def read_api_keys(config: RouterConfig, secrets_dir: str) -> dict[str, str | None]:
    """Each lane's API key from `DIR/name/key`, read as `laneway serve` reads it: a missing file
    is logged once (never a value) and the lane is called without a key."""
    store = SecretStore(secrets_dir)
    store.refresh(config)
    return {name: store.key_for(name) for name in config.lanes}


# ---------------------------------------------------------------------------------------------
# Calling one lane.


def answer_text(completion: Mapping[str, Any] | None) -> str:
    """The answer's text, with any tool calls written out as `[tool call] name(arguments)`."""
    choices = (completion or {}).get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    message = first.get("message") if isinstance(first, Mapping) else None
    if not isinstance(message, Mapping):
        return ""
    parts = [message["content"]] if isinstance(message.get("content"), str) else []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            parts.append(f"[tool call] {function.get('name')}({function.get('arguments') or ''})")
    return "\n".join(parts)


class LaneClient:
    """Calls lanes by name over one HTTP session, with the sidecar's adapters and timeouts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: RouterConfig,
        keys: Mapping[str, str | None],
    ) -> None:
        self._session = session
        self._config = config
        self._keys = keys

    async def complete(self, lane_name: str, body: Mapping[str, Any]) -> LaneCall:
        lane = self._config.lanes[lane_name]
        adapter = adapter_for(lane.provider.type)
        request = adapter.build_request(lane, body, self._keys.get(lane_name), stream=False)
        timeout = aiohttp.ClientTimeout(
            total=lane.total_ms / 1000, sock_connect=lane.connect_ms / 1000
        )
        started = time.monotonic()
        try:
            async with self._session.post(
                request.url, json=request.payload, headers=dict(request.headers), timeout=timeout
            ) as resp:
                data = await _read_json(resp)
                elapsed = (time.monotonic() - started) * 1000
                if resp.status >= 400:
                    failure = classify_status(resp.status, data, resp.headers.get("Retry-After"))
                    error = f"HTTP {resp.status}: {failure.message}"
                    return LaneCall(None, Usage(), elapsed, error)
        except (aiohttp.ClientError, TimeoutError) as exc:
            elapsed = (time.monotonic() - started) * 1000
            return LaneCall(None, Usage(), elapsed, classify_exception(exc).message)
        try:
            completion, usage = adapter.parse_answer(data)
        except ValueError as exc:
            return LaneCall(None, Usage(), elapsed, malformed_response(str(exc)).message)
        return LaneCall(completion, usage, elapsed)


async def _read_json(resp: aiohttp.ClientResponse) -> Any:
    """The body as JSON, or None when it is not JSON (an HTML error page, say)."""
    raw = await resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _tokens(call: LaneCall, prompt_tokens: int, text: str) -> tuple[int, int]:
    """Reported usage, or estimates when the provider reported none; a failed call costs none."""
    if call.error is not None:
        return 0, 0
    used_in = call.usage.input_tokens
    used_out = call.usage.output_tokens
    return (
        used_in if used_in is not None else prompt_tokens,
        used_out if used_out is not None else estimate_tokens(text),
    )


# ---------------------------------------------------------------------------------------------
# The run.


class _Run:
    """One live evaluation: the shared client, the concurrency limit and the progress count."""

    def __init__(
        self,
        client: LaneClient,
        config: RouterConfig,
        concurrency: int,
        total: int,
        progress: Progress | None,
    ) -> None:
        self.client = client
        self.config = config
        self.limit = asyncio.Semaphore(concurrency)
        self.total = total
        self.done = 0
        self.progress = progress

    async def call(self, lane: str, body: Mapping[str, Any]) -> LaneCall:
        async with self.limit:
            return await self.client.complete(lane, body)

    async def answer(self, item: RoutedPrompt, lane: Lane) -> LaneAnswer:
        result = await self._answer(item, lane)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        return result

    async def _answer(self, item: RoutedPrompt, lane: Lane) -> LaneAnswer:
        prompt = item.prompt
        body = prompt.request_body(model=lane.name)
        signals = extract_signals(body, prompt.hints)
        screen = screen_lanes(self.config, (lane.name,), signals)
        if lane.name not in screen.lanes:
            why = screen.skipped[0][1] if screen.skipped else "not usable"
            return _not_called(item, lane.name, f"not called: {why}")

        call = await self.call(lane.name, body)
        text = answer_text(call.completion)
        tokens_in, tokens_out = _tokens(call, signals.prompt_tokens, text)
        fired = None
        if call.completion is not None:
            fired = check_answer(self.config, body, call.completion, signals, call.latency_ms)
        verdict, judge, judge_cost = await self._grade(item, call, text)
        budget = signals.latency_budget_ms
        if verdict.passed and budget is not None and call.latency_ms > budget:
            # The prompt's latency label is part of its bar: a right answer too late fails it.
            verdict = Verdict(False, f"{verdict.reason}; but it took {call.latency_ms:.0f} ms, "
                                     f"over the prompt's latency budget of {budget} ms")
        return LaneAnswer(
            prompt_id=prompt.id,
            family=prompt.family,
            lane=lane.name,
            called=True,
            passed=verdict.passed,
            reason=verdict.reason,
            latency_ms=call.latency_ms,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=lane.cost(tokens_in, tokens_out),
            error=call.error,
            trigger=fired[0] if fired else None,
            judge_lane=judge,
            judge_cost=judge_cost,
            graded=verdict.graded,
        )

    async def _grade(
        self, item: RoutedPrompt, call: LaneCall, text: str
    ) -> tuple[Verdict, str | None, float]:
        """(verdict, judge lane, judge cost) for one answer."""
        if call.error is not None:
            return Verdict(False, f"lane failed: {call.error}"), None, 0.0
        check = item.prompt.check
        if check is not None and check.type != "judge":
            return run_check(check, text), None, 0.0

        judge = judge_lane_for(check, self.config)
        body = judge_body(item.prompt.text, text, check.criteria if check else None)
        reply = await self.call(judge, body)
        if reply.error is not None:
            return Verdict(False, f"not graded: judge lane {judge} failed", False), judge, 0.0
        reply_text = answer_text(reply.completion)
        tokens_in, tokens_out = _tokens(reply, 0, reply_text)
        cost = self.config.lanes[judge].cost(tokens_in, tokens_out)
        return read_verdict(reply_text), judge, cost


def _not_called(item: RoutedPrompt, lane: str, why: str) -> LaneAnswer:
    return LaneAnswer(
        prompt_id=item.prompt.id,
        family=item.prompt.family,
        lane=lane,
        called=False,
        passed=False,
        reason=why,
        latency_ms=0.0,
        input_tokens=0,
        output_tokens=0,
        cost=0.0,
        error=None,
        trigger=None,
    )


async def run_live(
    config: RouterConfig,
    routed: Sequence[RoutedPrompt],
    keys: Mapping[str, str | None],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
) -> list[LaneAnswer]:
    """Every prompt on every lane of the policy, graded; in prompt order, then lane order."""
    lanes = list(config.lanes.values())
    async with aiohttp.ClientSession() as session:
        run = _Run(
            LaneClient(session, config, keys),
            config,
            concurrency,
            total=len(routed) * len(lanes),
            progress=progress,
        )
        jobs = [run.answer(item, lane) for item in routed for lane in lanes]
        answers = list(await asyncio.gather(*jobs))
    log.debug("Live evaluation finished: %d answers", len(answers))
    return answers
