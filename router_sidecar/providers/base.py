"""The one interface every provider adapter implements, plus the SSE reader they share.

`engine.py` talks to a lane only through an adapter from `router_sidecar.providers.adapter_for`:
`build_request` turns the client's OpenAI-shaped body into the provider's request,
`parse_answer` turns the provider's JSON answer back into an OpenAI `chat.completion`, and
`stream_translator` turns the provider's stream events into OpenAI `chat.completion.chunk` SSE
frames, one event at a time, so nothing is buffered. Adapters are stateless and pure (no I/O);
the engine does the HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

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
    """The provider sent an error event inside a stream; `body` is its parsed payload."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.body = body


class StreamTranslator(ABC):
    """Turns one provider stream into OpenAI SSE frames.

    `feed` gets each event (its `event:` name, if any, and its `data:` text) and returns the
    frames to send to the client, possibly none. It raises `StreamError` when the provider
    reports an error inside the stream. After the provider's last event `done` is True.
    """

    def __init__(self) -> None:
        self.done = False
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.output_chars = 0

    @abstractmethod
    def feed(self, event: str | None, data: str) -> list[bytes]: ...


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


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) for each server-sent event, as the bytes arrive."""
    event: str | None = None
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield event, "\n".join(data)
