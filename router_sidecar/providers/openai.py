"""Adapter for OpenAI-compatible chat completion APIs (OpenAI, vLLM, Ollama, TGI, gateways).

The client already speaks this shape, so the body passes through with the lane's model name and
output limit; the answer and the stream come back unchanged. Streams ask the provider for a usage
chunk so the router can count tokens and cost; that chunk is passed on only if the client asked
for it too. Called by `engine.py` through `router_sidecar.providers.adapter_for`.

Streams are the sidecar's busiest path, so `OpenAIStream` passes the usual read (whole one-line
`data: {...}` events) on as the bytes that arrived: each chunk is checked to be a JSON object
and only its finish reason, usage and error are read out of it (msgspec builds nothing else);
the chunks that carry one of those are noted, and a usage chunk nobody asked for is cut out.
Anything unusual in a read sends that read event by event through `feed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from router_sidecar import fastjson
from router_sidecar.config import Lane
from router_sidecar.providers.base import (
    DONE_FRAME,
    ProviderAdapter,
    StreamError,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    clamp_max_tokens,
)


def _usage(obj: Any) -> Usage:
    # Parsed JSON holds dicts: checking for dict first skips the slow Mapping ABC check.
    if not isinstance(obj, (dict, Mapping)):
        return Usage()
    prompt, completion = obj.get("prompt_tokens"), obj.get("completion_tokens")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
    )


def _content_chars(choices: Any) -> int:
    """Characters of text and tool-call arguments in a chunk's deltas or an answer's messages."""
    if not isinstance(choices, list):
        return 0
    return sum(_choice_chars(choice) for choice in choices if isinstance(choice, dict))


def _choice_chars(choice: dict[str, Any]) -> int:
    # Parsed JSON holds dicts and lists: checking for those exactly is much cheaper than
    # checking for the Mapping ABC, and this runs for every chunk of every stream.
    part = choice.get("delta") or choice.get("message")
    if not isinstance(part, dict):
        return 0
    content = part.get("content")
    total = len(content) if isinstance(content, str) else 0
    calls = part.get("tool_calls")
    return total + _call_chars(calls) if calls else total


def _call_chars(calls: Any) -> int:
    total = 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            total += len(function["arguments"])
    return total


# Chunks passed through whole are counted (see `OpenAIStream.output_chars`) once this many wait.
_UNCOUNTED_LIMIT = 64


class OpenAIStream(StreamTranslator):
    """Pass OpenAI chunks through as they are, noting usage and the finish reason.

    `read` takes the usual read, whole one-line `data: {...}` events, in one piece: it checks all
    its chunks (`_Chunk`), passes the bytes on as they arrived and notes only the chunks that
    carry something (`_note`, which reads them as `_take` does). Any other read goes event by
    event through `feed`, and so do the events left when the body ends.
    """

    def __init__(self, include_usage: bool) -> None:
        super().__init__()
        self._include_usage = include_usage

    @property
    def output_chars(self) -> int:
        """Characters of text and tool-call arguments so far. They matter only when no usage
        arrives, so the chunks passed through whole are kept as text and read when asked."""
        if self._uncounted:
            for text in self._uncounted:
                chunk = fastjson.loads(text)
                self._chars += _content_chars(chunk.get("choices"))
            self._uncounted = []
        return self._chars

    @output_chars.setter
    def output_chars(self, value: int) -> None:
        self._chars = value
        self._uncounted: list[bytes] = []

    def read(self, chunk: bytes) -> bytes:
        region = self.decoder.feed_blocks(chunk)
        if region is None:
            return super().read(chunk)
        if not region or self.done:
            return b""
        frames = self._pass_through(region)
        return frames if frames is not None else self.translate(self.decoder.events(region))

    def _pass_through(self, region: bytes) -> bytes | None:
        """The frames for the whole events from `SSEDecoder.feed_blocks` if each is one line
        `data: <JSON object>` of the usual shape (the last may be `data: [DONE]`): the bytes as
        they arrived, less the usage chunk the client did not ask for. None, having noted
        nothing, if not."""
        if not region.startswith(b"data: "):
            return None
        texts = region[6:-2].split(b"\n\ndata: ")
        if region.count(b"\n") != 2 * len(texts):
            return None  # an event of more than one line
        # Bytes that `feed` would read as U+FFFD do not pass as they are.
        if not region.isascii():
            try:
                region.decode()
            except UnicodeDecodeError:
                return None
        done = texts[-1] == b"[DONE]"
        body = texts[:-1] if done else texts
        # Each chunk is checked to be JSON (an earlier [DONE] is not) and an object; only the
        # fields that make a chunk notable are read out of it.
        try:
            chunks = list(map(_read_chunk, body))
        except msgspec.DecodeError:
            return None
        dropped: list[int] = []
        for i in _notable(chunks):
            try:
                keep = self._note(chunks[i], body[i])
            except StreamError as exc:
                self._uncount(body[:i])
                exc.frames = _without(region, body, dropped, i)
                raise
            if not keep:
                dropped.append(i)
        self._uncount(body)
        self.done = done
        # Every event as it came, [DONE] included, less the usage chunks nobody asked for.
        return _without(region, body, dropped) if dropped else region

    def _note(self, chunk: _Chunk, text: bytes) -> bool:
        """`_take` for a notable chunk as `_pass_through` read it (`text` is its JSON): whether
        its event goes on to the client. Its characters are counted with the others."""
        if chunk.error is not msgspec.UNSET:
            raise StreamError("the provider reported an error in the stream", fastjson.loads(text))
        for choice in chunk.choices:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if chunk.usage:
            self.usage = _usage(chunk.usage)
            # The usage-only chunk the router asked for, not the client, stays here.
            return bool(chunk.choices) or self._include_usage
        return True

    def _uncount(self, texts: list[bytes]) -> None:
        self._uncounted.extend(texts)
        if len(self._uncounted) > _UNCOUNTED_LIMIT:
            _ = self.output_chars  # counting them now keeps a long stream's memory bounded

    def feed(self, event: str | None, data: str) -> list[bytes]:
        if data == "[DONE]":
            self.done = True
            return [DONE_FRAME]
        try:
            chunk = fastjson.loads(data)
        except ValueError as exc:
            raise StreamError(f"unreadable stream chunk: {exc}") from exc
        if not isinstance(chunk, dict):
            raise StreamError("stream chunk is not a JSON object")
        frame = self._take(chunk, data.encode())
        return [frame] if frame else []

    def _take(self, chunk: dict[str, Any], data: bytes) -> bytes:
        """Note what a parsed chunk says and return its frame (none for the usage chunk the
        client did not ask for); `data` is its text."""
        if "error" in chunk:
            raise StreamError("the provider reported an error in the stream", chunk)
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                # _choice_chars, inlined for the usual delta.
                part = choice.get("delta") or choice.get("message")
                if isinstance(part, dict):
                    content = part.get("content")
                    if isinstance(content, str):
                        self._chars += len(content)
                    if part.get("tool_calls"):
                        self._chars += _call_chars(part["tool_calls"])
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
            if not choices and not self._include_usage:
                return b""  # the usage-only chunk the router asked for, not the client
        return b"data: " + data + b"\n\n"


class _Choice(msgspec.Struct):
    finish_reason: Any = None


class _Chunk(msgspec.Struct):
    """What `_pass_through` reads of a chunk: the fields that make it notable. The rest of the
    chunk is checked to be JSON but never built into Python objects, which is what makes the
    usual chunk cheap. A chunk of another shape (`choices` not a list of objects, say) fails to
    decode and sends its read through `feed`, which reads anything."""

    choices: list[_Choice] = []
    usage: Any = None
    error: Any = msgspec.UNSET


_read_chunk = msgspec.json.Decoder(_Chunk).decode


def _notable(chunks: list[_Chunk]) -> list[int]:
    """The places of the chunks that `_note` does more with than pass them on and count their
    characters: those with an error, usage or a finish reason (one comprehension, no call per
    chunk: this runs for every read of every stream)."""
    unset = msgspec.UNSET
    return [
        i
        for i, c in enumerate(chunks)
        if c.usage
        or c.error is not unset
        or (
            c.choices
            and (
                c.choices[0].finish_reason
                or (len(c.choices) > 1 and any([x.finish_reason for x in c.choices]))
            )
        )
    ]


def _without(region: bytes, texts: list[bytes], dropped: list[int], end: int = -1) -> bytes:
    """The events of `region` (`data: <text>\\n\\n` for each of `texts`, then perhaps
    `data: [DONE]\\n\\n`) less the `dropped` ones; only those before event `end` if given."""
    pieces: list[bytes] = []
    start = 0
    for i in dropped:
        at = sum(map(len, texts[:i])) + 8 * i  # "data: " and the blank line: 8 bytes each
        pieces.append(region[start:at])
        start = at + len(texts[i]) + 8
    stop = len(region) if end < 0 else sum(map(len, texts[:end])) + 8 * end
    pieces.append(region[start:stop])
    return b"".join(pieces)


class OpenAIAdapter(ProviderAdapter):
    type = "openai"

    def build_request(
        self, lane: Lane, body: Mapping[str, Any], api_key: str | None, *, stream: bool
    ) -> UpstreamRequest:
        payload = dict(body)
        payload["model"] = lane.provider.model
        limit = clamp_max_tokens(lane, body)
        if limit is not None:
            key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            payload[key] = limit
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            payload["stream_options"] = options
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = "Bearer " + api_key
        return UpstreamRequest(lane.provider.base_url + "/chat/completions", headers, payload)

    def parse_answer(self, data: Any) -> tuple[dict[str, Any], Usage]:
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise ValueError("the answer has no 'choices' list")
        if not data["choices"]:
            raise ValueError("the answer's 'choices' list is empty")
        return data, _usage(data.get("usage"))

    def stream_translator(self, *, include_usage: bool) -> StreamTranslator:
        return OpenAIStream(include_usage)


def answer_chars(answer: Mapping[str, Any]) -> int:
    """Characters of output in an OpenAI answer, for estimating tokens when usage is missing."""
    return _content_chars(answer.get("choices"))
