"""The one interface every provider adapter implements, plus the SSE decoder for their streams.

`engine.py` talks to a lane only through an adapter from `router_sidecar.providers.adapter_for`:
`build_request` turns the client's OpenAI-shaped body into the provider's request,
`parse_answer` turns the provider's JSON answer back into an OpenAI `chat.completion`, and
`stream_translator` gives a `StreamTranslator` that turns the body of the provider's stream, one
network read at a time, into OpenAI `chat.completion.chunk` SSE frames, so nothing waits for the
whole answer. Adapters are stateless and pure (no I/O); the engine does the HTTP and hands each
read to the translator, which cuts it into events with `SSEDecoder` (an OpenAI stream's usual
reads pass through in one piece: see `openai.OpenAIStream`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router_sidecar.config import Lane

DONE_FRAME = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: Mapping[str, str]
    payload: dict[str, Any]


@dataclass
class Usage:
    """Token counts a provider reported; None when it reported none."""

    input_tokens: int | None = None
    output_tokens: int | None = None


class StreamError(Exception):
    """The provider sent an error event (or an unreadable one) inside a stream; `body` is its
    parsed payload. `frames` holds the frames of the events before it in the same read."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.body = body
        self.frames = b""


class StreamTranslator(ABC):
    """Turns one provider stream into OpenAI SSE frames.

    `read` gets the body bytes of each network read and returns the frames for the events they
    complete, joined (empty if none yet); `close` does the same once the body has ended. Both
    raise `StreamError` when the provider reports an error inside the stream, after the frames
    of the events before it (they are in the exception's `frames`). Events after the provider's
    last one, which sets `done`, are not read. Subclasses implement `feed`, which gets each
    event (its `event:` name, if any, and its `data:` text) and returns its frames, possibly none.
    """

    def __init__(self) -> None:
        self.done = False
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.output_chars = 0
        self.decoder = SSEDecoder()

    @abstractmethod
    def feed(self, event: str | None, data: str) -> list[bytes]: ...

    def read(self, chunk: bytes) -> bytes:
        return self.translate(self.decoder.feed(chunk))

    def close(self) -> bytes:
        return self.translate(self.decoder.close())

    def translate(self, events: list[tuple[str | None, str]]) -> bytes:
        """The frames of `events`, in one piece, up to the stream's last event."""
        frames: list[bytes] = []
        try:
            for event, data in events:
                if self.done:
                    break
                frames.extend(self.feed(event, data))
        except StreamError as exc:
            exc.frames = b"".join(frames)
            raise
        return b"".join(frames)


class ProviderAdapter(ABC):
    """Translate between the OpenAI chat shape the client speaks and one provider's API."""

    #: The `provider.type` this adapter serves.
    type: str = ""

    @abstractmethod
    def build_request(
        self, lane: Lane, body: Mapping[str, Any], api_key: str | None, *, stream: bool
    ) -> UpstreamRequest:
        """The provider request for the client's body, using the lane's model and limits."""

    @abstractmethod
    def parse_answer(self, data: Any) -> tuple[dict[str, Any], Usage]:
        """The OpenAI `chat.completion` for a provider answer; ValueError if unreadable."""

    @abstractmethod
    def stream_translator(self, *, include_usage: bool) -> StreamTranslator:
        """A fresh translator for one stream; `include_usage` mirrors the client's
        `stream_options.include_usage`."""


def clamp_max_tokens(lane: Lane, body: Mapping[str, Any]) -> int | None:
    """The client's output limit, capped at the lane's `maxOutputTokens`; None if unset."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, lane.max_output_tokens)
    return None


def wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


class SSEDecoder:
    """Splits a server-sent event stream into (event name, data) pairs, whatever the chunking.

    `feed` takes the body bytes of one network read and returns the events completed by them;
    `close` returns the last event when the stream ended without its blank line. Lines end at
    `\n` (a trailing `\r` is dropped); `data:` lines of one event join with `\n`; comments, `id:`
    and `retry:` lines are ignored.
    """

    __slots__ = ("_data", "_event", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        region = self.feed_blocks(chunk)
        if region is None:
            return self._feed_lines(self._tail + chunk)
        return self.events(region)

    def feed_blocks(self, chunk: bytes) -> bytes | None:
        """`feed` in two steps for the usual stream, whose lines end in a bare newline: the bytes
        of the events that `chunk` completes, up to and including the last one's blank line
        (empty if none yet), for `events`. None, having consumed nothing, if the bytes have a
        carriage return or an event began in an earlier read: `feed` reads those line by line."""
        buffered = self._tail + chunk if self._tail else chunk
        if b"\r" in buffered or self._data or self._event is not None:
            return None
        cut = buffered.rfind(b"\n\n")
        if cut < 0:
            self._tail = buffered
            return b""
        self._tail = buffered[cut + 2 :]
        return buffered[: cut + 2]

    def events(self, region: bytes) -> list[tuple[str | None, str]]:
        """The events in bytes from `feed_blocks`; an event of one `data: ` line is read whole."""
        events: list[tuple[str | None, str]] = []
        # Decoding whole lines at once is safe: a UTF-8 sequence never spans a newline.
        for block in region[:-2].decode("utf-8", "replace").split("\n\n") if region else ():
            if block.startswith("data: ") and "\n" not in block:
                events.append((None, block[6:]))
            else:
                events.extend(self._lines([*block.split("\n"), ""]))
        return events

    def _feed_lines(self, buffered: bytes) -> list[tuple[str | None, str]]:
        cut = buffered.rfind(b"\n")
        if cut < 0:
            self._tail = buffered
            return []
        self._tail = buffered[cut + 1 :]
        return self._lines(buffered[:cut].decode("utf-8", "replace").split("\n"))

    def close(self) -> list[tuple[str | None, str]]:
        tail, self._tail = self._tail, b""
        lines = [tail.decode("utf-8", "replace")] if tail else []
        events = self._lines(lines)
        if self._data:
            events.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events

    def _lines(self, lines: list[str]) -> list[tuple[str | None, str]]:
        events: list[tuple[str | None, str]] = []
        data = self._data
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                if data:
                    events.append((self._event, "\n".join(data)))
                    data = self._data = []
                self._event = None
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith("event:"):
                self._event = line[6:].strip()
        return events
