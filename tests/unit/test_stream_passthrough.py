"""OpenAI streams pass through read by read: whatever the reads, the client gets the bytes the
event-by-event path gives, in the same writes, and the router records the same tokens, usage,
finish reason and output characters. Reads that are not plain `data: {...}` events (named or
multi-line events, CRLF, comments, malformed or erroring chunks) keep working."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from router_sidecar import errors
from router_sidecar.config import parse_config
from router_sidecar.decision import decide
from router_sidecar.decision_log import DecisionRecord
from router_sidecar.engine import Engine, Run, StreamBroken
from router_sidecar.metrics import Metrics
from router_sidecar.providers.base import StreamError
from router_sidecar.providers.openai import _UNCOUNTED_LIMIT, OpenAIStream
from router_sidecar.signals import extract_signals, parse_hints
from tests.e2e.harness import lane, policy_doc

CONFIG = parse_config(policy_doc({"a": lane("http://127.0.0.1:9/v1")}, {"main": ["a"]}))
DONE = b"data: [DONE]\n\n"


def event(data: str | bytes) -> bytes:
    return b"data: " + (data.encode() if isinstance(data, str) else data) + b"\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: Any = None, **extra: Any) -> bytes:
    """A chat.completion.chunk event as OpenAI writes it (compact JSON, raw UTF-8)."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }
    return event(json.dumps(body, separators=(",", ":"), ensure_ascii=False))


def usage_chunk(prompt: int = 7, completion: int = 5) -> bytes:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": 12}
    return event(json.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage}))


ROLE = chunk({"role": "assistant", "content": ""})
WORDS = [chunk({"content": w}) for w in ("Unit", " tests", " catch", " regressions", " é", "!")]
FINISH = chunk(finish="stop")
STREAM = ROLE + b"".join(WORDS) + FINISH + usage_chunk() + DONE


# -- the engine, with an upstream whose body arrives in given reads --------------------------


class _Upstream:
    """A provider response whose body arrives in the given reads."""

    status = 200

    def __init__(self, reads: list[bytes]) -> None:
        self.headers: dict[str, str] = {}
        self._reads = [r for r in reads if r]

    async def next_chunk(self) -> bytes:
        return self._reads.pop(0) if self._reads else b""

    def lift_early_deadline(self) -> None:
        pass

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Client:
    def __init__(self) -> None:
        self.writes: list[tuple[bytes, bool]] = []

    async def write(self, data: bytes, *, last: bool = False) -> None:
        self.writes.append((data, last))


@dataclass
class Served:
    writes: list[tuple[bytes, bool]]  # each write to the client: (bytes, ends the response)
    recorded: tuple[int, int, float, bool, str]  # tokens in and out, cost, estimated, error
    outcome: str  # "ok", "broken" (an error event ended the stream) or "failed" (no stream)

    @property
    def body(self) -> bytes:
        return b"".join(data for data, _ in self.writes)


@contextmanager
def event_by_event() -> Iterator[None]:
    """Every read through `OpenAIStream.feed`, one event at a time, as before the fast path."""
    with patch.object(OpenAIStream, "_pass_through", lambda self, region: None):
        yield


def serve(reads: list[bytes], *, include_usage: bool = False, fast: bool = True) -> Served:
    return asyncio.run(_serve(reads, include_usage, fast))


async def _serve(reads: list[bytes], include_usage: bool, fast: bool) -> Served:
    engine = Engine(Metrics())
    upstream = _Upstream(reads)

    async def post(*_: Any) -> _Upstream:
        return upstream

    engine._post = post  # type: ignore[assignment,method-assign]
    body: dict[str, Any] = {"model": "auto", "stream": True, "messages": [{"role": "user"}]}
    body["messages"][0]["content"] = "Tell me about tests"
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    signals = extract_signals(body, parse_hints({}))
    now = time.monotonic()
    run = Run(
        config=CONFIG,
        body=body,
        signals=signals,
        decision=decide(CONFIG, signals, "auto"),
        record=DecisionRecord(decision_id="0" * 24),
        started=now,
        deadline=now + 5,
    )
    client = _Client()
    outcome = "ok"
    try:
        with nullcontext() if fast else event_by_event():
            await engine.stream(run, client)
    except StreamBroken:
        outcome = "broken"
    except errors.RouterError:
        outcome = "failed"
    finally:
        await engine.close()
    rec = run.record
    recorded = (rec.input_tokens, rec.output_tokens, rec.cost_usd, rec.cost_estimated, rec.error)
    return Served(client.writes, recorded, outcome)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def assert_as_event_by_event(reads: list[bytes], *, include_usage: bool = False) -> Served:
    served = serve(reads, include_usage=include_usage)
    assert served == serve(reads, include_usage=include_usage, fast=False)
    return served


# -- the translator alone ----------------------------------------------------------------------


@dataclass
class Translated:
    frames: list[bytes]  # per read
    error: str | None
    noted: tuple[Any, Any, Any, int, bool]  # usage in, usage out, finish reason, chars, done


def translate(reads: list[bytes], *, include_usage: bool = False) -> Translated:
    tr = OpenAIStream(include_usage)
    frames: list[bytes] = []
    error = None
    try:
        for piece in [*(r for r in reads if r), b""]:
            frames.append(tr.read(piece) if piece else tr.close())
            if tr.done:
                break
    except StreamError as exc:
        frames.append(exc.frames)
        error = str(exc)
    usage = tr.usage
    noted = (usage.input_tokens, usage.output_tokens, tr.finish_reason, tr.output_chars, tr.done)
    return Translated(frames, error, noted)


def assert_translated_as_event_by_event(
    reads: list[bytes], *, include_usage: bool = False
) -> Translated:
    got = translate(reads, include_usage=include_usage)
    with event_by_event():
        assert got == translate(reads, include_usage=include_usage)
    return got


# -- plain streams -----------------------------------------------------------------------------


def test_a_stream_in_one_read_reaches_the_client_as_it_came_in_one_write() -> None:
    served = assert_as_event_by_event([STREAM])
    assert served.writes == [(STREAM.replace(usage_chunk(), b""), True)]
    assert served.recorded[:2] == (7, 5) and served.recorded[3:] == (False, "")
    assert served.outcome == "ok"


def test_each_read_is_one_write_and_the_first_goes_out_as_soon_as_it_arrives() -> None:
    reads = [ROLE[:10], ROLE[10:] + WORDS[0], b"".join(WORDS[1:]), FINISH + usage_chunk() + DONE]
    served = assert_as_event_by_event(reads)
    assert served.writes == [
        (ROLE + WORDS[0], False),
        (b"".join(WORDS[1:]), False),
        (FINISH + DONE, True),
    ]


def test_the_stream_split_at_any_byte_gives_the_same_bytes_and_records() -> None:
    expected = serve([STREAM])
    for cut in range(1, len(STREAM)):
        served = assert_as_event_by_event(split(STREAM, [cut]))
        assert (served.body, served.recorded) == (expected.body, expected.recorded), cut


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=10))
def test_the_stream_split_into_many_reads_gives_the_same_bytes_and_records(
    cuts: list[int],
) -> None:
    served = assert_as_event_by_event(split(STREAM, cuts))
    assert served.body == STREAM.replace(usage_chunk(), b"")


def test_the_usage_chunk_reaches_the_client_only_if_it_asked_for_usage() -> None:
    hidden = assert_as_event_by_event([STREAM])
    shown = assert_as_event_by_event([STREAM], include_usage=True)
    assert shown.body == STREAM
    assert usage_chunk() not in hidden.body
    assert hidden.recorded == shown.recorded
    assert (hidden.recorded[0], hidden.recorded[1]) == (7, 5)


def test_usage_in_a_chunk_with_choices_is_noted_and_the_chunk_passed_on() -> None:
    last = chunk(
        {"content": "!"}, finish="length", usage={"prompt_tokens": 3, "completion_tokens": 9}
    )
    got = assert_translated_as_event_by_event([ROLE + last + DONE])
    assert got.frames == [ROLE + last + DONE]
    assert got.noted == (3, 9, "length", len("!"), True)


def test_the_finish_reason_of_any_choice_is_noted() -> None:
    two = {"index": 0, "delta": {"content": "a"}, "finish_reason": None}
    choices = [two, {"index": 1, "delta": {"content": "b"}, "finish_reason": "stop"}]
    both = event(json.dumps({"choices": choices}))
    got = assert_translated_as_event_by_event([ROLE + both + DONE])
    assert got.frames == [ROLE + both + DONE]
    assert got.noted == (None, None, "stop", 2, True)


def test_finish_reason_usage_and_characters_are_noted_as_chunk_by_chunk() -> None:
    got = assert_translated_as_event_by_event([STREAM])
    text = "Unit tests catch regressions é!"
    assert got.noted == (7, 5, "stop", len(text), True)


def test_without_usage_the_output_is_estimated_from_text_and_tool_arguments() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    args = [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
        for a in ('{"ci', 'ty": "Oslo"}')
    ]
    stream = ROLE + chunk({"tool_calls": [call]}) + b"".join(args) + WORDS[0] + FINISH + DONE
    served = assert_as_event_by_event([stream])
    chars = len('{"city": "Oslo"}') + len("Unit")
    assert served.recorded[1] == -(-chars // 4)
    assert served.recorded[3] is True  # estimated
    assert translate([stream]).noted == (None, None, "stop", chars, True)


def test_a_long_stream_without_usage_counts_every_character() -> None:
    words = [chunk({"content": f"w{i} "}) for i in range(_UNCOUNTED_LIMIT * 2 + 7)]
    reads = [b"".join(words[i : i + 50]) for i in range(0, len(words), 50)] + [FINISH + DONE]
    got = assert_translated_as_event_by_event(reads)
    assert got.noted[3] == sum(len(f"w{i} ") for i in range(len(words)))


def test_events_after_done_are_not_read() -> None:
    served = assert_as_event_by_event([ROLE + DONE + b"data: {not json}\n\n" + WORDS[0]])
    assert served.writes == [(ROLE + DONE, True)]
    assert served.outcome == "ok"


# -- what the fast path must not take for something else ---------------------------------------


def test_usage_finish_reason_and_error_as_text_pass_through_unnoticed() -> None:
    tricky = [
        chunk({"content": "usage"}),
        chunk({"content": "finish_reason"}),
        chunk({"content": '"usage": {"prompt_tokens": 1}, "finish_reason": "stop"'}),
        chunk({"content": '{"error": "boom"}'}),
        chunk({"content": "error"}, usage=None),
        chunk({"content": "x", "finish_reason": "stop", "usage": {"a": 1}}),
    ]
    stream = ROLE + b"".join(tricky) + DONE
    served = assert_as_event_by_event([stream])
    assert served.body == stream
    got = assert_translated_as_event_by_event([stream])
    assert got.noted[:3] == (None, None, None)


def test_keys_spelled_with_unicode_escapes_are_read_as_keys() -> None:
    finish = event('{"choices":[{"index":0,"delta":{},"\\u0066inish_reason":"stop"}]}')
    usage = event('{"choices":[],"\\u0075sage":{"prompt_tokens":2,"completion_tokens":3}}')
    got = assert_translated_as_event_by_event([ROLE + finish + usage + DONE])
    assert got.frames == [ROLE + finish + DONE]
    assert got.noted[:3] == (2, 3, "stop")

    error = event('{"\\u0065rror":{"message":"boom"}}')
    served = assert_as_event_by_event([ROLE + WORDS[0] + error + WORDS[1]])
    assert served.outcome == "broken"


def test_escaped_and_raw_unicode_text_passes_through_unchanged() -> None:
    words = [
        event(
            '{"choices":[{"index":0,"delta":{"content":"caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\"}}]}'
        ),
        chunk({"content": 'naïve 😀 "quoted" \\ \n\t'}),
        event(json.dumps({"choices": [{"index": 0, "delta": {"content": "ascii \u2028"}}]})),
    ]
    stream = ROLE + b"".join(words) + FINISH + DONE
    for cuts in ([], [len(ROLE) + 30], list(range(0, len(stream), 7))):
        served = assert_as_event_by_event(split(stream, cuts))
        assert served.body == stream
    got = assert_translated_as_event_by_event([stream])
    assert got.noted[3] == len('café 😀 "q" \\') + len('naïve 😀 "quoted" \\ \n\t') + len(
        "ascii \u2028"
    )


def test_bytes_that_are_not_utf8_reach_the_client_as_replacement_characters() -> None:
    bad = event(b'{"choices":[{"index":0,"delta":{"content":"caf\xe9"}}]}')
    served = assert_as_event_by_event([ROLE + bad + DONE])
    assert "caf\ufffd".encode() in served.body


def test_huge_integers_are_read_exactly_as_before() -> None:
    usage = event(
        '{"choices":[],"usage":{"prompt_tokens":123456789012345678901,"completion_tokens":4}}'
    )
    got = assert_translated_as_event_by_event([ROLE + usage + DONE])
    assert got.noted[:2] == (123456789012345678901, 4)


# Chunks whose shape or numbers the pass-through's reader (`_Chunk`) takes differently from a
# whole parse: each must reach the client and the records exactly as event by event.
ODD_CHUNKS = [
    event(b'{"id":"\xff","choices":[{"index":0,"delta":{"content":"x"}}]}'),  # not UTF-8, unread
    event('{"choices":null}'),
    event('{"choices":[1,{"index":0,"finish_reason":"stop"}]}'),
    event('{"choices":[],"usage":null}'),
    event('{"choices":[],"error":null}'),
    event('{"created":123456789012345678901234567890,"choices":[]}'),
    event('{"created":1e999,"choices":[{"index":0,"delta":{"content":"big"}}]}'),
    event('{"choices":[{"index":0,"finish_reason":"stop"}],"choices":[]}'),
    event('{"choices":[{"index":0,"finish_reason":7}]}'),
    event('{"choices":[],"usage":{"prompt_tokens":1e400,"completion_tokens":2}}'),
    event('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":NaN}}'),
]


def test_chunks_the_quick_reader_takes_differently_are_served_as_event_by_event() -> None:
    for odd in ODD_CHUNKS:
        for reads in ([ROLE + odd + WORDS[0] + FINISH + DONE], [ROLE, odd, WORDS[0], DONE]):
            for include_usage in (False, True):
                assert_as_event_by_event(reads, include_usage=include_usage)
                assert_translated_as_event_by_event(reads, include_usage=include_usage)


# -- errors ------------------------------------------------------------------------------------


ERROR = event('{"error":{"message":"overloaded","type":"server_error"}}')


def test_an_error_chunk_mid_stream_ends_it_after_the_chunks_before_it() -> None:
    served = assert_as_event_by_event([ROLE + WORDS[0] + ERROR + WORDS[1] + DONE])
    assert served.outcome == "broken"
    assert served.writes[0] == (ROLE + WORDS[0], False)
    assert len(served.writes) == 2 and b"stream_interrupted" in served.writes[1][0]
    assert served.recorded[4].startswith("the provider failed mid-stream")
    assert served.recorded[1] == 1  # "Unit", estimated: no usage arrived


def test_an_error_chunk_in_a_later_read_ends_the_stream_there() -> None:
    served = assert_as_event_by_event([ROLE + WORDS[0], WORDS[1] + ERROR, WORDS[2] + DONE])
    assert [data for data, _ in served.writes[:2]] == [ROLE + WORDS[0], WORDS[1]]
    assert served.outcome == "broken"


def test_an_error_before_the_first_chunk_is_a_failed_call_not_a_broken_stream() -> None:
    served = assert_as_event_by_event([ERROR + ROLE + DONE])
    assert (served.writes, served.outcome) == ([], "failed")


def test_malformed_chunks_end_the_stream_after_the_chunks_before_them() -> None:
    for bad in (b"{not json", b"[1, 2]", b'"text"', b'"error"', b"", b"{} {}", b'{"a":1}}'):
        served = assert_as_event_by_event([ROLE + WORDS[0] + event(bad) + WORDS[1] + DONE])
        assert served.outcome == "broken", bad
        assert served.writes[0] == (ROLE + WORDS[0], False), bad
        served = assert_as_event_by_event([ROLE, WORDS[0], event(bad), WORDS[1], DONE])
        assert served.outcome == "broken", bad
        assert served.writes[:2] == [(ROLE, False), (WORDS[0], False)], bad
    got = translate([ROLE + event(b"{not json") + DONE])
    assert got.error is not None and got.error.startswith("unreadable stream chunk")


# -- events that are not one plain data line ---------------------------------------------------


def test_named_multi_line_commented_and_crlf_events_keep_their_meaning() -> None:
    streams = [
        b"event: delta\n" + WORDS[0] + b": keep-alive\n\n" + b"id: 7\n" + WORDS[1] + DONE,
        b'data: {"choices":\ndata: [{"index":0,"delta":{"content":"two lines"}}]}\n\n' + DONE,
        b'data:{"choices":[{"index":0,"delta":{"content":"no space"}}]}\n\n' + DONE,
        (ROLE + WORDS[0] + FINISH + usage_chunk() + DONE).replace(b"\n", b"\r\n"),
        ROLE + b"\n\n\n" + WORDS[0] + b"\n" + WORDS[1] + DONE,
    ]
    for stream in streams:
        for cuts in ([], [len(stream) // 2], list(range(3, len(stream), 11))):
            served = assert_as_event_by_event(split(stream, cuts))
            assert served.outcome == "ok", stream
    crlf = streams[3]
    assert serve([crlf]).body == (ROLE + WORDS[0] + FINISH + DONE)
    assert serve([streams[0]]).body == WORDS[0] + WORDS[1] + DONE


def test_a_stream_that_ends_without_done_is_broken_after_its_last_event() -> None:
    served = assert_as_event_by_event([ROLE + WORDS[0] + WORDS[1].rstrip(b"\n")])
    assert served.outcome == "broken"
    assert served.body.startswith(ROLE + WORDS[0] + WORDS[1])


# -- any stream, any reads ---------------------------------------------------------------------

PIECES = ["a", " ", '"', "\\", "\n", "é", "😀", "\u2028", "\x01", "usage", '"error"', "[DONE]"]
TEXT = st.lists(st.sampled_from([*PIECES, "finish_reason", "data: ", "\r"]), max_size=6).map(
    "".join
)
EVENTS = st.one_of(
    TEXT.map(lambda t: chunk({"content": t})),
    TEXT.map(lambda t: event(json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]}))),
    st.sampled_from(
        [
            ROLE,
            FINISH,
            usage_chunk(),
            ERROR,
            DONE,
            chunk({"content": "x"}, usage=None),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
            event('{"choices":[{"index":0,"delta":{},"\\u0066inish_reason":"length"}]}'),
            event('{"choices":[{"index":0,"delta":{}},{"index":1,"finish_reason":"stop"}]}'),
            event(b"{not json"),
            event(b"[]"),
            b": comment\n\n",
            b"event: x\n" + WORDS[0],
            b'data: {"choices":\ndata: []}\n\n',
            b"\n\n",
            event(b'{"choices":[{"delta":{"content":"\xff"}}]}'),
            *ODD_CHUNKS,
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(EVENTS, min_size=1, max_size=8),
    st.one_of(st.none(), st.lists(st.integers(0, 2000), max_size=6)),
    st.booleans(),
    st.booleans(),
)
def test_any_stream_cut_into_any_reads_is_served_as_event_by_event(
    events: list[bytes], cuts: list[int] | None, crlf: bool, include_usage: bool
) -> None:
    if crlf:
        events = [e.replace(b"\n", b"\r\n") for e in events]
    stream = b"".join(events)
    # No cuts: one event per read, as a provider that flushes each event gives them.
    reads = events if cuts is None else split(stream, [c for c in cuts if c <= len(stream)])
    assert_as_event_by_event(reads, include_usage=include_usage)
    assert_translated_as_event_by_event(reads, include_usage=include_usage)
