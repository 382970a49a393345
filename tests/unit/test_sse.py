"""Server-sent events are cut into (event, data) pairs the same way however the bytes arrive."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from router_sidecar.providers.base import SSEDecoder

STREAM = (
    b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9"}}]}\n\n'
    b": a comment\n\n"
    b"event: message_start\ndata: {\"type\": \"message_start\"}\n\n"
    b"id: 7\ndata: first line\ndata: second line\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    (None, '{"choices":[{"delta":{"content":"café"}}]}'),
    ("message_start", '{"type": "message_start"}'),
    (None, "first line\nsecond line"),
    (None, "[DONE]"),
]


def decode(pieces: list[bytes]) -> list[tuple[str | None, str]]:
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    return events + decoder.close()


def test_a_stream_read_whole_gives_every_event_in_order() -> None:
    assert decode([STREAM]) == EVENTS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert decode([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EVENTS


def test_crlf_line_ends_are_read_like_lf() -> None:
    assert decode([STREAM.replace(b"\n", b"\r\n")]) == EVENTS


def test_events_complete_only_at_their_blank_line_and_the_last_one_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: two") == [(None, "one")]
    assert decoder.close() == [(None, "two")]


def test_data_without_a_space_after_the_colon_is_kept_whole() -> None:
    assert decode([b"data:{}\n\ndata:  two spaces\n\n"]) == [(None, "{}"), (None, " two spaces")]
