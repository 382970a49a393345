"""Every control mode of the simulated OpenAI provider, as a client (the real SDK) meets it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import openai
import pytest

from router_sidecar.simulator import SimulatedProvider
from tests.unit.test_simulator import CHAT_BODY, WEATHER_TOOL, parse_sse


@pytest.fixture(autouse=True)
def quiet_server(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Dropped, held and broken connections must not leave errors or stray tasks behind."""
    yield
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] in ("asyncio", "aiohttp")
    ]
    assert noisy == []


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedProvider]:
    async with SimulatedProvider(model="sim-b") as provider:
        yield provider


@pytest.fixture
async def client(sim: SimulatedProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=sim.url, api_key="any", max_retries=0, timeout=5)
    yield sdk
    await sdk.close()


async def ask(client: openai.AsyncOpenAI, prompt: str = "hello there", **extra: object) -> str:
    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": prompt}],
        **extra,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("mode", "error_class", "status", "error_type"),
    [
        ("error500", openai.InternalServerError, 500, "server_error"),
        ("overloaded", openai.InternalServerError, 503, "server_error"),
        ("ratelimit", openai.RateLimitError, 429, "requests"),
    ],
)
async def test_error_modes_answer_with_openai_shaped_errors(
    sim: SimulatedProvider,
    client: openai.AsyncOpenAI,
    mode: str,
    error_class: type[openai.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    sim.set_mode(mode)

    with pytest.raises(error_class) as caught:
        await ask(client)

    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == error_type
    assert set(caught.value.body) == {"message", "type", "param", "code"}


async def test_ratelimit_says_when_to_retry(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("ratelimit")

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)

    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


async def test_context_overflow_is_openais_context_length_error(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("context_overflow")

    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client)

    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert caught.value.message.startswith("Error code: 400")
    assert "This model's maximum context length is 128000 tokens." in caught.value.message


async def test_a_context_window_rejects_only_prompts_longer_than_it(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("ok", context_window=100)

    short = await ask(client, "x" * 400)
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client, "x" * 404)

    assert short.startswith("[sim-b] ok:")
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in caught.value.message
    assert "resulted in 101 tokens" in caught.value.message


async def test_refuse_answers_with_a_polite_refusal_even_when_tools_are_asked_for(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("refuse")

    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "use the tool"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    assert reply.choices[0].message.content == "I'm sorry, but I can't help with that."
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"


async def test_truncate_cuts_the_answer_with_finish_reason_length(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    full = await ask(client, "a fairly long question about routing")
    sim.set_mode("truncate")

    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a fairly long question about routing"}]
    )

    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "length"
    assert full.startswith(text) and len(text) < len(full)


async def test_truncate_in_a_stream_ends_with_finish_reason_length(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("truncate")

    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    finishes = [chunk.choices[0].finish_reason async for chunk in stream]

    assert finishes[-1] == "length"


async def test_uncertain_answers_begin_with_im_not_sure(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("uncertain")

    text = await ask(client)

    assert text.startswith("I'm not sure")
    assert "[sim-b]" in text


async def test_invalid_json_breaks_json_answers_but_not_plain_ones(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("invalid_json")

    as_json = await ask(client, response_format={"type": "json_object"})
    plain = await ask(client)

    with pytest.raises(json.JSONDecodeError):
        json.loads(as_json)
    assert plain == "[sim-b] ok: hello there"


async def test_invalid_json_breaks_tool_call_arguments(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("invalid_json")

    reply = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "use the tool"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    assert reply.choices[0].message.tool_calls is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.tool_calls[0].function.arguments)


async def test_a_fixed_answer_and_a_forced_tool_call_can_be_set(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("ok", answer="forty-two")
    fixed = await ask(client)
    sim.set_mode("ok", tool_call=True)
    forced = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )

    assert fixed == "forty-two"
    assert forced.choices[0].finish_reason == "tool_calls"


async def test_latency_delays_the_answer(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("ok", latency_ms=150)

    started = time.monotonic()
    await ask(client)

    assert time.monotonic() - started >= 0.15


async def test_latency_delays_the_first_chunk_and_chunk_delay_spaces_the_rest(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("ok", latency_ms=150, chunk_delay_ms=20)

    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    arrivals = [time.monotonic() - started async for _ in stream]

    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.02 * (len(arrivals) - 1) * 0.9


async def test_timeout_never_answers_and_lets_go_when_the_client_gives_up(
    sim: SimulatedProvider,
) -> None:
    sim.set_mode("timeout")
    impatient = openai.AsyncOpenAI(base_url=sim.url, api_key="k", max_retries=0, timeout=0.3)

    with pytest.raises(openai.APITimeoutError):
        await impatient.chat.completions.create(**CHAT_BODY)
    await impatient.close()

    # The held request ends with its connection, leaving nothing running on the server.
    for _ in range(50):
        if sim.state["hanging"] == 0:
            break
        await asyncio.sleep(0.02)
    assert sim.state["hanging"] == 0
    assert sim.state["requests"] == 1


async def test_stopping_ends_held_requests_at_once() -> None:
    sim = SimulatedProvider()
    await sim.start()
    sim.set_mode("timeout")
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.post(f"{sim.url}/chat/completions", json=CHAT_BODY))
        while sim.state["hanging"] == 0:
            await asyncio.sleep(0.01)

        started = time.monotonic()
        await sim.stop()

        assert time.monotonic() - started < 0.9
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_down_resets_connections_while_control_keeps_working(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("down")

    with pytest.raises(openai.APIConnectionError):
        await ask(client)
    with pytest.raises(openai.APIConnectionError):
        await client.models.list()
    async with aiohttp.ClientSession() as http:
        base = sim.url.removesuffix("/v1")
        async with http.post(f"{base}/_control", json={"mode": "ok"}) as resp:
            assert resp.status == 200
    assert await ask(client) == "[sim-b] ok: hello there"


async def test_stream_error_fails_a_stream_after_some_chunks(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("stream_error")

    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "a longer question to stream"}],
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk)

    assert received, "some chunks arrive before the failure"


async def test_stream_error_raw_stream_has_an_error_event_and_no_done(
    sim: SimulatedProvider,
) -> None:
    sim.set_mode("stream_error")
    raw = b""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sim.url}/chat/completions", json={**CHAT_BODY, "stream": True}) as resp,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in resp.content.iter_any():
                raw += piece

    events = parse_sse(raw.decode())
    assert json.loads(events[-1][1])["error"]["type"] == "server_error"
    assert all(data != "[DONE]" for _, data in events)


async def test_stream_error_cuts_a_plain_response_short(
    sim: SimulatedProvider, client: openai.AsyncOpenAI
) -> None:
    sim.set_mode("stream_error")

    with pytest.raises(openai.APIConnectionError):
        await ask(client)
