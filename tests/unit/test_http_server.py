"""The sidecar's HTTP/1.1 layer over real sockets: framing, keep-alive, limits, shutdown.

Requests are written byte for byte with asyncio streams, so what is tested is exactly what a
client sees on the wire, including the cases client libraries never produce.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from router_sidecar.http_server import HttpServer, Request, Response, Stream
from router_sidecar.server import error_answer

LIMIT = 4096
BIG_HEAD = "request_header_too_large"


class Echo:
    """A handler that answers with what it was given; `/stream` streams three parts, `/slow`
    waits for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled = 0
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response | Stream:
        self.seen.append(request)
        if request.too_large:
            return error_answer(413, "too large")
        if request.path == "/stream":
            stream = request.open_stream(200, {"Content-Type": "text/event-stream"})
            for part in (b"one", b"two"):
                await stream.write(part)
            await stream.write(b"three", last=True)
            return stream
        if request.path == "/slow":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if request.path == "/boom":
            raise RuntimeError("a bug")
        body = {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body": request.body.decode(),
        }
        return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Echo, int]]:
    echo = Echo()
    server = HttpServer(echo, error_answer, max_body_bytes=LIMIT, idle_timeout_s=0.4)
    addresses = await server.serve("127.0.0.1", 0)
    yield server, echo, addresses[0][1]
    echo.release.set()
    await server.close(grace_s=1)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-cased names) and the de-chunked body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return status, headers, body


def _post(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_keep_alive_answers_pipelined_requests_in_order(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(b"".join(_post(f"/p{i}?n={i}", b"b%d" % i) for i in range(5)))
    for i in range(5):
        status, headers, body = await _read_answer(reader)
        answer = json.loads(body)
        assert (status, answer["path"], answer["query"], answer["body"]) == (
            200,
            f"/p{i}",
            f"n={i}",
            f"b{i}",
        )
        assert "connection" not in headers
        assert headers["date"].endswith("GMT")
    writer.close()


async def test_header_names_are_case_insensitive_and_repeats_are_joined(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/h", b"", "X-Laneway-Tier: fast\r\nAccept: a\r\naccept: b\r\n"))
    _, _, body = await _read_answer(reader)
    headers = json.loads(body)["headers"]
    assert headers["x-laneway-tier"] == "fast"
    assert headers["accept"] == "a, b"
    writer.close()


async def test_http10_and_connection_close_end_the_connection_after_the_answer(served) -> None:
    _, _, port = served
    for request in (_post("/a", b"x", version="1.0"), _post("/a", b"x", "Connection: close\r\n")):
        reader, writer = await _connect(port)
        writer.write(request)
        status, headers, _ = await _read_answer(reader)
        assert status == 200
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


async def test_a_stream_is_chunked_for_http11_and_close_delimited_for_http10(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/stream", b"") + _post("/after", b""))
    status, headers, body = await _read_answer(reader)
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"onetwothree")
    assert json.loads((await _read_answer(reader))[2])["path"] == "/after"  # still usable
    writer.close()

    reader, writer = await _connect(port)
    writer.write(_post("/stream", b"", version="1.0"))
    status, headers, body = await _read_answer(reader)
    assert "transfer-encoding" not in headers
    assert body == b"onetwothree"
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/e", b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 4"))
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"body")
    assert json.loads((await _read_answer(reader))[2])["body"] == "body"
    writer.close()


async def test_an_oversized_body_is_answered_413_without_being_read(served) -> None:
    _, echo, port = served
    reader, writer = await _connect(port)
    head = _post("/big", b"", "Expect: 100-continue\r\n")
    writer.write(head.replace(b"Length: 0", b"Length: %d" % (LIMIT * 100)))
    status, headers, body = await _read_answer(reader)  # no 100 Continue before it
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert headers["connection"] == "close"
    assert echo.seen[-1].too_large
    writer.close()


async def test_a_chunked_body_is_accepted_and_counted_against_the_limit(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(chunked + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert json.loads((await _read_answer(reader))[2])["body"] == "abcde"
    writer.write(chunked + b"%x\r\n%s\r\n" % (LIMIT + 1, b"z" * (LIMIT + 1)))
    assert (await _read_answer(reader))[0] == 413
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"NOT A REQUEST\r\n\r\n", 400, "malformed_request"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed_request"),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "request_header_too_large",
        ),
    ],
)
async def test_requests_the_parser_rejects_get_an_openai_error_and_a_close(
    served, raw: bytes, status: int, code: str
) -> None:
    _, echo, port = served
    reader, writer = await _connect(port)
    writer.write(raw)
    got, headers, body = await _read_answer(reader)
    assert (got, json.loads(body)["error"]["code"]) == (status, code)
    assert headers["connection"] == "close"
    assert echo.seen == []
    writer.close()


async def test_a_handler_bug_is_a_500_in_the_openai_shape_and_the_connection_lives(
    served, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/boom", b"") + _post("/ok", b""))
    status, _, body = await _read_answer(reader)
    assert status == 500
    assert json.loads(body)["error"]["type"] == "server_error"
    assert (await _read_answer(reader))[0] == 200
    assert "a bug" in caplog.text
    writer.close()


async def test_head_gets_the_length_but_no_body(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + _post("/next", b""))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Content-Length: " in head and not head.endswith(b"Content-Length: 0\r\n\r\n")
    # The next bytes are the next answer, not a body.
    assert json.loads((await _read_answer(reader))[2])["path"] == "/next"
    writer.close()


async def test_idle_and_unfinished_connections_are_closed_after_the_idle_timeout(served) -> None:
    _, _, port = served
    idle_reader, idle_writer = await _connect(port)
    slow_reader, slow_writer = await _connect(port)
    slow_writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    for reader in (idle_reader, slow_reader):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    idle_writer.close()
    slow_writer.close()


async def test_a_client_leaving_cancels_its_handler(served) -> None:
    _, echo, port = served
    _, writer = await _connect(port)
    writer.write(_post("/slow", b""))
    for _ in range(100):
        if echo.seen:
            break
        await asyncio.sleep(0.01)
    writer.close()
    for _ in range(100):
        if echo.cancelled:
            break
        await asyncio.sleep(0.01)
    assert echo.cancelled == 1


async def test_shutdown_finishes_requests_in_flight_and_refuses_new_connections() -> None:
    echo = Echo()
    server = HttpServer(echo, error_answer, max_body_bytes=LIMIT)
    port = (await server.serve("127.0.0.1", 0))[0][1]
    reader, writer = await _connect(port)
    writer.write(_post("/slow", b""))
    while not echo.seen:
        await asyncio.sleep(0.01)
    closing = asyncio.create_task(server.close(grace_s=5))
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await _connect(port)
    echo.release.set()
    status, headers, _ = await _read_answer(reader)
    assert (status, headers["connection"]) == (200, "close")
    await closing
    assert echo.cancelled == 0
    writer.close()


async def test_a_client_that_sends_a_whole_oversized_body_still_reads_its_413(served) -> None:
    _, _, port = served
    for _ in range(5):
        reader, writer = await _connect(port)
        writer.write(_post("/big", b"x" * (LIMIT * 200)))  # no Expect: all of it is sent
        status, headers, _ = await _read_answer(reader)
        assert (status, headers["connection"]) == (413, "close")
        writer.close()


async def test_requests_pipelined_after_connection_close_are_not_answered(served) -> None:
    _, echo, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/last", b"", "Connection: close\r\n") + _post("/extra", b""))
    assert json.loads((await _read_answer(reader))[2])["path"] == "/last"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert [r.path for r in echo.seen] == ["/last"]
    writer.close()


async def test_an_http10_keep_alive_client_gets_a_close_delimited_stream(served) -> None:
    _, _, port = served
    reader, writer = await _connect(port)
    writer.write(_post("/stream", b"", "Connection: keep-alive\r\n", version="1.0"))
    status, headers, body = await _read_answer(reader)
    assert (status, headers["connection"], body) == (200, "close", b"onetwothree")
    assert "transfer-encoding" not in headers
    writer.close()
