"""Fault injection: thousands of requests while lanes flip between failure modes at random.

The primary and first backup lanes flip between healthy and every failure mode; the last backup
stays healthy. Every request must end in a correct answer from a lane that was healthy at the
time; the only failure allowed is a stream that broke after its first chunk (an SSE error event,
since sent text cannot be taken back). The sidecar's metrics must count exactly what the client
saw.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from tests.e2e.harness import Sidecar, lane, policy_doc, running

REQUESTS = 2_000
CONCURRENCY = 32
FLIP_EVERY = 4  # one lane changes mode every few requests
# Half the time a lane is fine; otherwise it fails in one of the ways providers do.
FAILURE_MODES = [
    *["ok"] * 8,
    "error500",
    "overloaded",
    "ratelimit",
    "down",
    "timeout",
    "context_overflow",
    "stream_error",
]


# Generous enough that a busy test machine does not turn healthy answers into timeouts.
TIMEOUT_MS = 1_500


def _build(sims: dict[str, Any]) -> dict[str, Any]:
    limits = {"total_ms": TIMEOUT_MS, "first_token_ms": TIMEOUT_MS}
    return policy_doc(
        {
            "a": lane(sims["a"].url, context=100_000, **limits),
            "b": lane(sims["b"].url, api="anthropic", context=200_000, **limits),
            "c": lane(sims["c"].url, context=300_000, **limits),
        },
        {"main": ["a", "b", "c"]},
        fallback={
            "triggers": ["rateLimited", "timeout", "serverError", "connectionError",
                         "contextOverflow"],
            "retries": {"max": 1, "backoffMs": 5},
            "retryBudgetPercent": 20,
            "circuitBreaker": {"consecutiveFailures": 3, "cooldownMs": 150},
        },
    )


def _flip(sims: dict[str, Any], rng: random.Random) -> None:
    # Lane c, the last backup, stays healthy: no request may be lost while it is.
    rng.choice([sims["a"], sims["b"]]).set_mode(rng.choice(FAILURE_MODES))


def _check_stream(text: str, lane_name: str, prompt: str) -> bool:
    """True for a complete correct stream; False for one that ended with an error event."""
    content, frames = "", [f for f in text.split("\n\n") if f]
    for frame in frames:
        data = frame.removeprefix("data: ")
        if data == "[DONE]":
            assert content == f"[{lane_name}] ok: {prompt}", (lane_name, content)
            return True
        chunk = json.loads(data)
        if "error" in chunk:
            assert chunk["error"]["code"] == "stream_interrupted"
            return False
        for choice in chunk.get("choices") or ():
            content += choice["delta"].get("content") or ""
    raise AssertionError(f"stream ended with neither [DONE] nor an error event: {text[-200:]}")


async def _one(sidecar: Sidecar, i: int, rng: random.Random) -> str:
    prompt = f"question number {i}"
    stream = rng.random() < 0.3
    body = {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    assert sidecar.session is not None
    async with sidecar.session.post(sidecar.url + "/v1/chat/completions", json=body) as resp:
        raw = await resp.text()
        if resp.status != 200:
            assert resp.status in (502, 503, 504), (resp.status, raw)
            error = json.loads(raw)["error"]
            assert error["message"].startswith("Every lane of route 'main' failed"), error
            return "failed"
        lane_name = resp.headers["x-laneway-lane"]
        if stream:
            return "ok" if _check_stream(raw, lane_name, prompt) else "interrupted"
        answer = json.loads(raw)
        assert answer["choices"][0]["message"]["content"] == f"[{lane_name}] ok: {prompt}"
        return "ok"


async def test_random_lane_failures_end_in_right_answers_or_clear_errors_and_exact_counts() -> None:
    rng = random.Random(20_261_203)
    async with running({"a": "openai", "b": "anthropic", "c": "openai"}, _build) as (sidecar, sims):
        queue = iter(range(REQUESTS))
        outcomes: list[str] = []

        async def worker() -> None:
            for i in queue:
                # The chaos is paced by requests, not by the clock, so a slow machine sees the
                # same mix of failures per request as a fast one.
                if i % FLIP_EVERY == 0:
                    _flip(sims, rng)
                outcomes.append(await _one(sidecar, i, rng))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        assert len(outcomes) == REQUESTS
        ok = outcomes.count("ok")
        # With a healthy backup, nothing is lost: a request fails only as a stream that broke
        # after its first chunk was sent (which cannot be taken back), and says so.
        assert outcomes.count("failed") == 0
        assert ok + outcomes.count("interrupted") == REQUESTS
        assert await sidecar.metric("laneway_requests_total", outcome="ok") == ok
        assert await sidecar.metric("laneway_requests_total") == REQUESTS
        assert await sidecar.metric("laneway_request_duration_seconds_count") == REQUESTS
        assert await sidecar.metric("laneway_fallbacks_total") > 0
