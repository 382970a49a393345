"""Streaming: chunks pass through as they arrive, failures before the first chunk fall back,
failures after it end the stream with an SSE error event, and a client that leaves cancels the
upstream call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.e2e.harness import Sidecar, lane, policy_doc, running, store_for

TWO = {"a": "openai", "b": "anthropic"}
BODY = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Tell me more"}]}


def _two(first_token_ms: int = 3_000) -> Any:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc(
            {
                "a": lane(sims["a"].url, first_token_ms=first_token_ms),
                "b": lane(sims["b"].url, api="anthropic", context=200_000),
            },
            {"main": ["a", "b"]},
        )

    return build


def _frames(text: str) -> list[Any]:
    out = []
    for frame in text.split("\n\n"):
        if frame.startswith("data: "):
            data = frame.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_chunks_reach_the_client_as_the_provider_sends_them() -> None:
    async with running(TWO, _two()) as (sidecar, sims):
        sims["a"].set_mode("ok", chunk_delay_ms=120, answer="one two three four five six seven")
        assert sidecar.session is not None
        started = time.monotonic()
        arrivals = []
        async with sidecar.session.post(sidecar.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for line in resp.content:
                if line.startswith(b"data: "):
                    arrivals.append(time.monotonic() - started)
        assert len(arrivals) >= 4
        # The first chunk came long before the last: nothing waited for the whole answer.
        assert arrivals[-1] - arrivals[0] > 0.3


@pytest.mark.parametrize("mode", ["down", "error500", "ratelimit", "context_overflow"])
async def test_a_failure_before_the_first_chunk_falls_back_like_any_other(mode: str) -> None:
    async with running(TWO, _two()) as (sidecar, sims):
        sims["a"].set_mode(mode)
        assert sidecar.session is not None
        async with sidecar.session.post(sidecar.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.status == 200
            assert resp.headers["x-laneway-lane"] == "b"
            assert resp.headers["x-laneway-fallbacks"] == "1"
            frames = _frames(await resp.text())
        assert frames[-1] == "[DONE]"
        content = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-1])
        assert content == "[b] ok: Tell me more"


async def test_a_slow_first_token_falls_back_after_the_first_token_timeout() -> None:
    async with running(TWO, _two(first_token_ms=200)) as (sidecar, sims):
        sims["a"].set_mode("ok", latency_ms=2_000)
        started = time.monotonic()
        assert sidecar.session is not None
        async with sidecar.session.post(sidecar.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.headers["x-laneway-lane"] == "b"
            await resp.read()
        assert time.monotonic() - started < 1.5
        assert await sidecar.metric(
            "laneway_fallbacks_total", from_lane="a", to_lane="b", reason="timeout"
        ) == 1


async def test_a_stream_may_outlast_the_first_token_timeout_once_its_first_chunk_came() -> None:
    async with running(TWO, _two(first_token_ms=200)) as (sidecar, sims):
        sims["a"].set_mode("ok", chunk_delay_ms=60)  # the whole stream takes well over 200 ms
        started = time.monotonic()
        assert sidecar.session is not None
        async with sidecar.session.post(sidecar.url + "/v1/chat/completions", json=BODY) as resp:
            assert resp.headers["x-laneway-lane"] == "a"
            frames = _frames(await resp.text())
        assert time.monotonic() - started > 0.2
        assert frames[-1] == "[DONE]"
        content = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-1])
        assert content == "[a] ok: Tell me more"
        assert sims["b"].state["requests"] == 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_failure_after_the_first_chunk_ends_the_stream_with_an_error_event(
    api: str,
) -> None:
    def build(sims: dict[str, Any]) -> dict[str, Any]:
        return policy_doc({"a": lane(sims["a"].url, api=api)}, {"main": ["a"]})

    async with running({"a": api}, build) as (sidecar, sims):
        sims["a"].set_mode("stream_error", answer="a fairly long answer " * 10)
        client = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received = ""
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                received += chunk.choices[0].delta.content or "" if chunk.choices else ""
        await client.close()
        assert received  # part of the answer arrived first
        assert "incomplete" in str(info.value)
        assert await sidecar.metric("laneway_requests_total", outcome="failed") == 1


async def test_a_client_leaving_before_the_first_chunk_cancels_the_upstream_call() -> None:
    async with running(TWO, _two(first_token_ms=30_000)) as (sidecar, sims):
        sims["a"].set_mode("timeout")  # accepts the request and never answers
        timeout = aiohttp.ClientTimeout(total=0.3)
        assert sidecar.session is not None
        with pytest.raises(asyncio.TimeoutError):
            async with sidecar.session.post(
                sidecar.url + "/v1/chat/completions", json=BODY, timeout=timeout
            ) as resp:
                await resp.read()
        assert sims["a"].state["requests"] == 1
        for _ in range(50):
            if sims["a"].state["hanging"] == 0:
                break
            await asyncio.sleep(0.02)
        assert sims["a"].state["hanging"] == 0
        assert sims["b"].state["requests"] == 0
        await asyncio.sleep(0.05)
        assert await sidecar.metric("laneway_requests_total", outcome="cancelled") == 1


@contextlib.asynccontextmanager
async def _slow_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An OpenAI-style provider that streams one chunk every 50 ms and notes when its client
    (the sidecar) goes away."""
    gone = asyncio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(200):
                chunk = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", gone
    finally:
        await runner.cleanup()


async def test_a_client_leaving_mid_stream_cancels_the_upstream_call() -> None:
    async with _slow_upstream() as (url, gone):
        doc = policy_doc({"slow": lane(url, total_ms=30_000)}, {"main": ["slow"]})
        async with Sidecar(store_for(doc)) as sidecar:
            assert sidecar.session is not None
            resp = await sidecar.session.post(sidecar.url + "/v1/chat/completions", json=BODY)
            seen = 0
            async for line in resp.content:
                seen += line.startswith(b"data: ")
                if seen == 2:
                    break
            resp.close()  # the client goes away after two chunks
            await asyncio.wait_for(gone.wait(), timeout=2)
            await asyncio.sleep(0.05)
            assert await sidecar.metric("laneway_requests_total", outcome="cancelled") == 1
            assert await sidecar.metric(
                "laneway_upstream_duration_seconds_count", lane="slow", outcome="broken"
            ) == 1


async def test_events_split_anywhere_by_the_network_reach_the_client_whole() -> None:
    words = ["Split", " é", "vents", " arrive", " whole"]
    chunks = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in words]
    wire = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    wire += b"data: [DONE]\r\n\r\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(0, len(wire), 7):  # cuts through frames, lines and UTF-8 sequences
            await resp.write(wire[i : i + 7])
            await asyncio.sleep(0.001)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        doc = policy_doc({"split": lane(url)}, {"main": ["split"]})
        async with Sidecar(store_for(doc)) as sidecar:
            assert sidecar.session is not None
            async with sidecar.session.post(
                sidecar.url + "/v1/chat/completions", json=BODY
            ) as resp:
                frames = _frames(await resp.text())
    finally:
        await runner.cleanup()
    assert frames[-1] == "[DONE]"
    assert "".join(f["choices"][0]["delta"]["content"] for f in frames[:-1]) == "".join(words)
