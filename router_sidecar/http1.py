"""One HTTP/1.1 connection to a provider, and the response its caller reads.

`upstream._Pool` opens `Connection`s (plain, TLS, or TLS inside a proxy tunnel) and hands out one
per request; `Connection` parses the response as bytes arrive (Content-Length, chunked or
read-until-close bodies, gzip and deflate) and wakes the one reader waiting on it; `Response` is
what `upstream.Upstreams.post` returns to the engine, read whole or chunk by chunk. When the
response is done the connection goes back to its pool (`pool.put_back`).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from router_sidecar.upstream_errors import (
    MAX_HEAD_BYTES,
    BrokenResponse,
    Disconnected,
    UpstreamError,
)

if TYPE_CHECKING:
    from router_sidecar.upstream import _Pool

_PAUSE_BYTES = 256 * 1024  # stop reading the socket while this much body waits for its reader

# Body framing of one response.
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
# Where a chunked body is: a size line, chunk data, the CRLF after the data, the trailers.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


# ---------------------------------------------------------------------------------------------
# One connection: parses responses as bytes arrive and wakes the one reader waiting on it.


class Connection(asyncio.Protocol):
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.active = False  # a request was sent and its response is not complete yet
        self.idle_since = 0.0
        self._loop = pool.loop
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._start_response()

    def _start_response(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.body_done = False
        self.keep_alive = False
        self._framing = _NO_BODY
        self._remaining = 0
        self._chunk_state = _SIZE
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._decoder: zlib._Decompress | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        if self._buf:
            self._buf += data
        else:
            self._buf = bytearray(data)
        try:
            self._parse()
        except BrokenResponse as exc:
            self._fail(exc)
            return
        if self._queued > _PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and self._error is None:
            try:
                if self.head_done and self._framing == _UNTIL_CLOSE:
                    self._finish_body()
                else:
                    self._error = self._lost_error(exc)
            except BrokenResponse as broken:
                self._error = broken
        self._cancel_timer()
        self._wake()

    def _lost_error(self, exc: Exception | None) -> UpstreamError:
        why = f": {exc}" if exc is not None else ""
        if not self.head_done:
            return Disconnected(f"the provider closed the connection before answering{why}")
        return BrokenResponse(f"the connection closed before the answer was complete{why}")

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        while not self.head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise BrokenResponse("the response head is larger than 64 KiB")
                return
            head = self._buf[:end]
            del self._buf[: end + 4]
            self._read_head(head)
        if not self.body_done and self._buf:
            if self._framing == _CHUNKED:
                self._parse_chunked()
            elif self._framing == _LENGTH:
                take = self._take(self._remaining)
                self._remaining -= len(take)
                self._push(take)
                if self._remaining == 0:
                    self._finish_body()
            elif self._framing == _UNTIL_CLOSE:
                self._push(bytes(self._buf))
                self._buf.clear()

    def _take(self, most: int) -> bytes:
        """Up to `most` bytes from the front of the buffer (usually all of it, in one copy)."""
        buf = self._buf
        if most >= len(buf):
            take = bytes(buf)
            buf.clear()
        else:
            take = bytes(buf[:most])
            del buf[:most]
        return take

    def _read_head(self, head: bytes | bytearray) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BrokenResponse(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise BrokenResponse(f"malformed header line: {line[:60]!r}")
            headers.setdefault(name.strip().lower(), value.strip())
        if 100 <= status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.status, self.headers, self.head_done = status, headers, True
        connection = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
        encoding = headers.get("content-encoding")
        if encoding:
            self._set_decoder(encoding.lower().strip())
        self._set_framing(status, headers)

    def _set_framing(self, status: int, headers: Mapping[str, str]) -> None:
        if status in (204, 304):
            self._finish_body()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing = _CHUNKED
        elif "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):  # "²" is a digit to isdigit only
                raise BrokenResponse(f"bad Content-Length {length[:20]!r}")
            self._framing, self._remaining = _LENGTH, int(length)
            if self._remaining == 0:
                self._finish_body()
        else:
            self._framing, self.keep_alive = _UNTIL_CLOSE, False

    def _set_decoder(self, encoding: str) -> None:
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS)

    def _parse_chunked(self) -> None:
        buf = self._buf
        while buf and not self.body_done:
            if self._chunk_state == _DATA:
                take = self._take(self._remaining)
                self._remaining -= len(take)
                self._push(take)
                if self._remaining == 0:
                    self._chunk_state = _DATA_END
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise BrokenResponse("a chunk size line is too long")
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._chunk_state == _DATA_END:
                if line:
                    raise BrokenResponse("chunk data longer than its declared size")
                self._chunk_state = _SIZE
            elif self._chunk_state == _SIZE:
                self._start_chunk(line)
            elif not line:  # _TRAILER: an empty line ends the trailers and the body
                self._finish_body()

    def _start_chunk(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BrokenResponse(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise BrokenResponse(f"bad chunk size {size_text[:20]!r}")
        if size == 0:
            self._chunk_state = _TRAILER
        else:
            self._chunk_state, self._remaining = _DATA, size

    def _push(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise BrokenResponse(f"cannot decode the compressed body: {exc}") from None
        if data:
            self._chunks.append(data)
            self._queued += len(data)

    def _finish_body(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                raise BrokenResponse(f"cannot decode the compressed body: {exc}") from None
            if tail:
                self._chunks.append(tail)
            self._decoder = None
        self.body_done = True
        self.active = False
        self._cancel_timer()

    # -- waking the reader -----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.abort()
        self._wake()

    def time_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError("no complete answer within the total timeout"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait(self) -> None:
        """Until the protocol has news: head, body bytes, the end, or an error."""
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # -- use by Response and _Pool ---------------------------------------------------------------

    def send(self, data: bytes, deadline: float, early: float | None = None) -> None:
        """Write a request; the response must be complete by `deadline` (loop time), and by
        `early` too until `lift_early_deadline` is called."""
        self._start_response()
        self._error = None
        self.active = True
        self._deadline = deadline
        self._timer = self._loop.call_at(deadline if early is None else early, self.time_out)
        assert self.transport is not None
        self.pool.outbox.write(self.transport, data)

    def lift_early_deadline(self) -> None:
        timer = self._timer
        if timer is not None and timer.when() < self._deadline:
            timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self.time_out)

    def take_chunks(self) -> bytes:
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        self._queued = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def has_chunks(self) -> bool:
        return bool(self._chunks)

    def reusable(self) -> bool:
        """The last response ended cleanly and the provider keeps the connection open."""
        return (
            not self.closed
            and self.keep_alive
            and self.body_done
            and not self._chunks
            and not self._buf
        )

    def abort(self) -> None:
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


# ---------------------------------------------------------------------------------------------
# The response the caller reads.


class Response:
    """One provider response: status and lower-cased headers at once, the body as it comes."""

    __slots__ = ("_conn", "_released", "headers", "status")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    def read_now(self) -> bytes | None:
        """The whole body if all of it has arrived (as `read` returns it), else None."""
        if not self._conn.body_done:
            return None
        body = self._conn.take_chunks()
        self.release()
        return body

    async def read(self) -> bytes:
        """The whole body; the connection goes back to its pool when it allows."""
        conn = self._conn
        try:
            while not conn.body_done:
                await conn.wait()
        except BaseException:
            self.close()
            raise
        body = conn.take_chunks()
        self.release()
        return body

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        conn = self._conn
        try:
            while not conn.has_chunks():
                if conn.body_done:
                    return b""
                await conn.wait()
        except BaseException:
            self.close()
            raise
        return conn.take_chunks()

    def lift_early_deadline(self) -> None:
        """The part that had to come early (see `Upstreams.post`) has come: from now on only the
        total deadline applies."""
        if not self._released:
            self._conn.lift_early_deadline()

    def release(self) -> None:
        """Done with the response: keep the connection for the next call if it is reusable."""
        if not self._released:
            self._released = True
            self._conn.pool.put_back(self._conn)

    def close(self) -> None:
        """Done with the response, dropping its connection (an answer cut off, a cancel)."""
        if not self._released:
            self._released = True
            self._conn.abort()
            self._conn.pool.put_back(self._conn)
