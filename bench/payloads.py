"""The request every target gets and the fixed answers the static upstream gives.

Every target (direct, nginx, LiteLLM, Laneway) receives the same OpenAI chat-completion body. Its
`model` names what the proxies route on: LiteLLM's model group and Laneway's route are both
called `bench-plain` for the non-streaming request and `bench-stream` for the streaming one, and
each maps to the matching path of the upstream. The answers are realistic in size: a short
assistant message with usage, and the same text as an SSE stream of several chunks.
"""

from __future__ import annotations

import json
from typing import Any

PLAIN_MODEL = "bench-plain"
STREAM_MODEL = "bench-stream"
# A model LiteLLM's price map knows: with an unknown one it runs zero-cost diagnostics over the
# whole map on every request, and declaring prices in its config re-indexes the map per request.
UPSTREAM_MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"

ANSWER_TEXT = (
    "Unit tests catch regressions early, document how the code is meant to behave, "
    "and make refactoring safe because a failing test points at the exact change that broke it."
)
ANSWER_WORDS = tuple(ANSWER_TEXT.split(" "))


def request_body(*, stream: bool) -> bytes:
    """The chat-completion request, as bytes, for the streaming or the non-streaming case."""
    body: dict[str, Any] = {
        "model": STREAM_MODEL if stream else PLAIN_MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for a software team."},
            {"role": "user", "content": "Why do unit tests matter? Answer in one sentence."},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def _usage() -> dict[str, int]:
    words = len(ANSWER_WORDS)
    return {"prompt_tokens": 31, "completion_tokens": words, "total_tokens": 31 + words}


def plain_answer() -> str:
    """The non-streaming answer: one `chat.completion` object."""
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER_TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }
    return json.dumps(answer, separators=(",", ":"))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": UPSTREAM_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def stream_answer(words_per_chunk: int = 4) -> str:
    """The streaming answer: SSE frames with the role, the text, the finish, usage, [DONE]."""
    chunks = [_chunk({"role": "assistant", "content": ""})]
    for start in range(0, len(ANSWER_WORDS), words_per_chunk):
        text = " ".join(ANSWER_WORDS[start : start + words_per_chunk])
        chunks.append(_chunk({"content": text if start == 0 else " " + text}))
    chunks.append(_chunk({}, finish="stop"))
    usage_chunk = _chunk({})
    usage_chunk["choices"] = []
    usage_chunk["usage"] = _usage()
    chunks.append(usage_chunk)
    frames = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
    return "".join(frames) + "data: [DONE]\n\n"
