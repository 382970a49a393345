"""The one interface every simulated wire format implements, and what they share.

`server.SimulatedProvider` talks only to a `WireFormat`; `openai_wire.OpenAIWire` and
`anthropic_wire.AnthropicWire` implement it. Adding a provider means adding one adapter, never
a branch in the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from router_sidecar.simulator.answers import Answer, SimRequest

# Failures a wire format can render in its provider's error shape.
ERROR_KINDS = (
    "auth",
    "bad_request",
    "not_found",
    "server",
    "overloaded",
    "ratelimit",
    "context_overflow",
)


class RequestInvalid(Exception):
    """The request body breaks the provider's rules; the message is the provider's wording."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class WireFormat(Protocol):
    """A provider's HTTP API as the simulator speaks it."""

    api: str
    chat_path: str
    request_id_header: str
    default_context_window: int

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        """True when the headers carry `api_key` where this provider expects it."""
        ...

    def parse(self, body: Any, headers: Mapping[str, str]) -> SimRequest:
        """The request's meaning; raises `RequestInvalid` for what the provider would reject."""
        ...

    def new_id(self) -> str:
        """A fresh response id in the provider's style."""
        ...

    def render(self, req: SimRequest, answer: Answer, response_id: str) -> bytes:
        """The non-streaming response body."""
        ...

    def stream_events(self, req: SimRequest, answer: Answer, response_id: str) -> list[bytes]:
        """Every server-sent event of the streamed answer, in order, each ending in a blank line."""
        ...

    def stream_error_event(self) -> bytes:
        """The event a provider sends when it fails in the middle of a stream."""
        ...

    def error(
        self, kind: str, message: str | None = None, param: str | None = None
    ) -> tuple[int, bytes]:
        """Status and body for one of `ERROR_KINDS`; `message` replaces the stock wording."""
        ...

    def context_error(self, prompt_tokens: int, limit: int) -> tuple[int, bytes]:
        """Status and body of the provider's own "prompt too long" error."""
        ...

    def models(self, model: str) -> bytes:
        """The body of `GET /v1/models` listing the simulated model."""
        ...


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, as providers send them."""
    return json.dumps(value, separators=(",", ":")).encode()


def split_text(text: str, size: int = 12) -> list[str]:
    """Cut text into stream pieces of about `size` characters, at word ends where possible."""
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space + 1 if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces or [""]
