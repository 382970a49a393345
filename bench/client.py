"""The one-connection client: sequential requests over one keep-alive connection, timed.

`bench.run` uses it for added latency (non-streaming, whole response) and for time to first
chunk (streaming: until the first `data:` line of the body arrives). It is deliberately plain,
stdlib `http.client` with the garbage collector paused, so that its own cost is small and the
same for every target; the report subtracts the direct target's numbers measured in the same
round, which removes it.
"""

from __future__ import annotations

import gc
import http.client
import json
import time
from dataclasses import dataclass, field

from bench.payloads import request_body


class BadResponse(RuntimeError):
    """A target answered with something other than a complete chat completion."""


@dataclass
class Samples:
    """Per-request durations in seconds; `first_chunk` only for streaming requests."""

    total: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    errors: int = 0


def _check_plain(body: bytes) -> None:
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise BadResponse(f"the answer is not JSON: {body[:200]!r}") from exc
    if not answer.get("choices"):
        raise BadResponse(f"the answer has no choices: {body[:200]!r}")


def _check_stream(body: bytes) -> None:
    if b"data: [DONE]" not in body or b'"delta"' not in body:
        raise BadResponse(f"the stream did not finish with [DONE]: {body[-200:]!r}")


class OneConnection:
    """A keep-alive HTTP/1.1 connection to one target, reconnecting only if the server closes."""

    def __init__(self, port: int, timeout_s: float = 30) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        self._headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}

    def close(self) -> None:
        self._conn.close()

    def plain(self, path: str, body: bytes) -> tuple[float, bytes]:
        """Send one non-streaming request; its duration until the body has been read, and it."""
        start = time.perf_counter()
        self._conn.request("POST", path, body=body, headers=self._headers)
        resp = self._conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status != 200:
            raise BadResponse(f"status {resp.status}: {data[:300]!r}")
        return elapsed, data

    def stream(self, path: str, body: bytes) -> tuple[float, float, bytes]:
        """Send one streaming request; time to the first `data:` line, total time, and the body."""
        start = time.perf_counter()
        self._conn.request("POST", path, body=body, headers=self._headers)
        resp = self._conn.getresponse()
        if resp.status != 200:
            raise BadResponse(f"status {resp.status}: {resp.read()[:300]!r}")
        first = b""
        while not first.startswith(b"data:"):
            first = resp.readline()
            if not first:
                raise BadResponse("the stream ended before its first data line")
        first_at = time.perf_counter() - start
        data = first + resp.read()
        return first_at, time.perf_counter() - start, data


def measure(
    port: int, path: str, *, stream: bool, count: int, warmup: int, max_seconds: float
) -> Samples:
    """`count` sequential requests after `warmup` untimed ones, stopping early at `max_seconds`.

    The first response of each kind is checked in full, so a proxy that answers quickly with an
    error cannot pass for a fast one; a non-200 answer at any time counts as an error.
    """
    body = request_body(stream=stream)
    samples = Samples()
    conn = OneConnection(port)
    try:
        for i in range(warmup + 1):
            _one(conn, path, body, stream=stream, samples=None, check=i == 0)
        deadline = time.monotonic() + max_seconds
        gc.disable()
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            _one(conn, path, body, stream=stream, samples=samples, check=False)
    finally:
        gc.enable()
        conn.close()
    return samples


def _one(
    conn: OneConnection,
    path: str,
    body: bytes,
    *,
    stream: bool,
    samples: Samples | None,
    check: bool,
) -> None:
    try:
        if stream:
            first_at, total, data = conn.stream(path, body)
        else:
            total, data = conn.plain(path, body)
    except (BadResponse, OSError, http.client.HTTPException):
        conn.close()  # the next request opens a fresh connection
        if samples is None or check:
            raise
        samples.errors += 1
        return
    if check:
        (_check_stream if stream else _check_plain)(data)
    if samples is not None:
        samples.total.append(total)
        if stream:
            samples.first_chunk.append(first_at)
