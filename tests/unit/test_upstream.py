"""The provider HTTP client: framing, keep-alive, pool limits, timeouts and failures, against
small servers on loopback that answer with exactly the bytes each test needs."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from router_sidecar import errors
from router_sidecar.upstream import (
    BrokenResponse,
    ConnectFailed,
    Disconnected,
    Response,
    Upstreams,
)

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
BODY = b'{"messages":[]}'


class Server:
    """A loopback server; counts the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,  # a GET has no body
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@contextlib.asynccontextmanager
async def serving(
    answer: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[Server, str]]:
    server = Server(lambda r, w: answer(server, r, w))
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield server, f"{scheme}://127.0.0.1:{port}/v1/chat/completions"
    finally:
        listener.close()
        await listener.wait_closed()


def reply(status: str, headers: list[str], body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


async def post(client: Upstreams, url: str, *, total_s: float = 5.0) -> Response:
    headers = {"Content-Type": "application/json"}
    return await client.post(url, headers, BODY, connect_s=1.0, total_s=total_s)


async def keep_answering(server: Server, reader: Reader, writer: Writer) -> None:
    while True:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Length: 2"], b"{}"))
        await writer.drain()


async def test_answers_with_a_length_are_read_whole_and_the_connection_is_kept() -> None:
    client = Upstreams()
    async with serving(keep_answering) as (server, url):
        for _ in range(3):
            resp = await post(client, url)
            assert resp.status == 200
            assert await resp.read() == b"{}"
    client.close()
    assert server.connections == 1


async def test_the_request_carries_host_length_and_the_callers_headers() -> None:
    client = Upstreams()
    async with serving(keep_answering) as (server, url):
        await (await post(client, url.replace("completions", "completions?api-version=1"))).read()
    client.close()
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    port = url.split(":")[2].split("/")[0]
    assert lines[0] == "POST /v1/chat/completions?api-version=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(BODY)}" in lines
    assert body == BODY


async def test_credentials_in_the_base_url_become_basic_auth() -> None:
    client = Upstreams()
    async with serving(keep_answering) as (server, url):
        await (await post(client, url.replace("http://", "http://user:p%40ss@"))).read()
    client.close()
    assert b"Authorization: Basic dXNlcjpwQHNz\r\n" in server.requests[0]  # user:p@ss


async def test_a_header_value_with_a_line_break_is_refused_before_sending() -> None:
    client = Upstreams()
    async with serving(keep_answering) as (server, url):
        with pytest.raises(ValueError, match="line break"):
            await client.post(
                url, {"Authorization": "Bearer x\r\nX-Evil: 1"}, BODY, connect_s=1, total_s=1
            )
    client.close()
    assert server.requests == []


async def test_chunked_answers_split_at_awkward_places_are_reassembled() -> None:
    body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    wire = reply("200 OK", ["Transfer-Encoding: chunked"], body)

    async def dribble(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            for i in range(0, len(wire), 3):
                writer.write(wire[i : i + 3])
                await writer.drain()
                await asyncio.sleep(0)

    client = Upstreams()
    async with serving(dribble) as (server, url):
        assert await (await post(client, url)).read() == b"hello, world"
        assert await (await post(client, url)).read() == b"hello, world"
    client.close()
    assert server.connections == 1


async def test_stream_bodies_arrive_piece_by_piece() -> None:
    gate = asyncio.Event()

    async def two_parts(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Transfer-Encoding: chunked"], b"6\r\nfirst \r\n"))
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    client = Upstreams()
    async with serving(two_parts) as (_, url):
        resp = await post(client, url)
        assert await resp.next_chunk() == b"first "
        gate.set()
        assert await resp.next_chunk() == b"second"
        assert await resp.next_chunk() == b""
        resp.release()
    client.close()


async def test_a_body_without_length_ends_with_the_connection_which_is_not_reused() -> None:
    async def close_delimited(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Type: application/json"], b'{"a": 1}'))
        await writer.drain()

    client = Upstreams()
    async with serving(close_delimited) as (server, url):
        assert await (await post(client, url)).read() == b'{"a": 1}'
        assert await (await post(client, url)).read() == b'{"a": 1}'
    client.close()
    assert server.connections == 2


async def test_gzip_bodies_are_decoded_and_interim_responses_skipped() -> None:
    packed = gzip.compress(b'{"ok": true}')

    async def compressed(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("100 Continue", [], b""))
        writer.write(
            reply("200 OK", ["Content-Encoding: gzip", f"Content-Length: {len(packed)}"], packed)
        )
        await writer.drain()
        await reader.read()

    client = Upstreams()
    async with serving(compressed) as (server, url):
        resp = await post(client, url)
        assert resp.status == 200
        assert await resp.read() == b'{"ok": true}'
    client.close()
    assert b"Accept-Encoding: gzip, deflate\r\n" in server.requests[0]


async def test_status_and_headers_of_an_error_answer_are_readable() -> None:
    async def limited(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("429 Too Many Requests", ["Retry-After: 7", "Content-Length: 2"], b"{}"))
        await writer.drain()
        await reader.read()

    client = Upstreams()
    async with serving(limited) as (_, url):
        resp = await post(client, url)
        assert (resp.status, resp.headers["retry-after"]) == (429, "7")
        await resp.read()
    client.close()


async def test_a_provider_closing_before_answering_is_a_connection_error() -> None:
    async def hang_up(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)

    client = Upstreams()
    async with serving(hang_up) as (_, url):
        with pytest.raises(Disconnected) as info:
            await post(client, url)
    client.close()
    assert errors.classify_exception(info.value).trigger == errors.CONNECTION_ERROR


async def test_a_body_cut_short_is_a_server_error() -> None:
    async def cut(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Length: 100"], b'{"half'))
        await writer.drain()

    client = Upstreams()
    async with serving(cut) as (_, url):
        resp = await post(client, url)
        with pytest.raises(BrokenResponse) as info:
            await resp.read()
    client.close()
    assert errors.classify_exception(info.value).trigger == errors.SERVER_ERROR


async def test_bytes_that_are_not_http_are_a_server_error() -> None:
    async def garbage(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = Upstreams()
    async with serving(garbage) as (_, url):
        with pytest.raises(BrokenResponse, match="not an HTTP"):
            await post(client, url)
    client.close()


async def test_unusual_header_lines_frame_the_body_as_usual_and_bad_ones_fail() -> None:
    heads = [
        ["Content-Length : 2"],  # whitespace before the colon
        ["X-Trace: a", " Content-Length: 2"],  # a line that starts with whitespace
        ["content-length:2", "Content-Length: 99"],  # the first of repeated fields counts
        ["CONTENT-LENGTH:\t2 ", "Connection: Keep-Alive"],
        ["X-Caf\xe9: 1", "Content-Length: 2"],  # a name that is not a token
    ]
    bad = {
        "malformed header line": ["Content-Length: 2", "no colon here"],
        "bad Content-Length": ["Content-Length: \xb2"],  # a digit to str.isdigit, not to int
    }

    def answering(headers: list[str]) -> Callable[[Server, Reader, Writer], Awaitable[None]]:
        async def answer(server: Server, reader: Reader, writer: Writer) -> None:
            await server.read_request(reader)
            writer.write(reply("200 OK", headers, b"{}").decode().encode("latin-1"))
            await writer.drain()
            await reader.read()

        return answer

    client = Upstreams()
    for headers in heads:
        async with serving(answering(headers)) as (_, url):
            resp = await post(client, url)
            assert (resp.status, await resp.read()) == (200, b"{}"), headers
    for message, headers in bad.items():
        async with serving(answering(headers)) as (_, url):
            with pytest.raises(BrokenResponse, match=message):
                await post(client, url)
    client.close()


async def test_a_refused_connection_is_a_connection_error() -> None:
    async with serving(keep_answering) as (_, url):
        pass  # the port is free again
    client = Upstreams()
    with pytest.raises(ConnectFailed, match=r"cannot connect to 127\.0\.0\.1") as info:
        await post(client, url)
    assert errors.classify_exception(info.value).trigger == errors.CONNECTION_ERROR


async def test_the_total_timeout_covers_the_body_and_drops_the_connection() -> None:
    async def stall(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Length: 10"], b"12345"))
        await writer.drain()
        await reader.read()  # until the client gives up

    client = Upstreams()
    async with serving(stall) as (server, url):
        resp = await post(client, url, total_s=0.2)
        with pytest.raises(TimeoutError):
            await resp.read()
        await asyncio.wait_for(server.closed.wait(), 2)
    client.close()


async def test_the_early_deadline_covers_the_body_until_it_is_lifted() -> None:
    """A stream's first-token limit: the head alone does not meet it, the first chunk does."""
    first_sent = asyncio.Event()

    async def slow_stream(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Transfer-Encoding: chunked"], b""))
        await writer.drain()
        if len(server.requests) == 1:
            await reader.read()  # the first call never gets a chunk
            return
        writer.write(b"6\r\nfirst \r\n")
        await writer.drain()
        first_sent.set()
        await asyncio.sleep(0.4)  # twice the early limit
        writer.write(b"4\r\nrest\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    client = Upstreams()
    headers = {"Content-Type": "application/json"}
    async with serving(slow_stream) as (server, url):
        resp = await client.post(url, headers, BODY, connect_s=1.0, total_s=5.0, early_s=0.2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await resp.next_chunk()
        assert asyncio.get_running_loop().time() - started < 1.0
        await asyncio.wait_for(server.closed.wait(), 2)

        resp = await client.post(url, headers, BODY, connect_s=1.0, total_s=5.0, early_s=0.2)
        assert await resp.next_chunk() == b"first "
        resp.lift_early_deadline()
        assert await resp.next_chunk() == b"rest"
        assert await resp.next_chunk() == b""
        resp.release()
    assert first_sent.is_set()
    client.close()


async def test_a_cancelled_call_closes_its_connection() -> None:
    async def never(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        await reader.read()

    client = Upstreams()
    async with serving(never) as (server, url):
        call = asyncio.create_task(post(client, url))
        while not server.requests:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(server.closed.wait(), 2)
    client.close()


async def test_calls_over_the_limit_wait_for_a_connection() -> None:
    release = asyncio.Event()

    async def slow(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            await release.wait()
            writer.write(reply("200 OK", ["Content-Length: 2"], b"{}"))
            await writer.drain()

    client = Upstreams(limit=1)
    async with serving(slow) as (server, url):
        first = asyncio.create_task(post(client, url))
        second = asyncio.create_task(post(client, url))
        await asyncio.sleep(0.1)
        assert len(server.requests) == 1  # the second waits for the only connection
        release.set()
        for call in (first, second):
            assert await (await call).read() == b"{}"
    client.close()
    assert server.connections == 1


async def test_a_wait_for_a_connection_ends_at_the_total_timeout() -> None:
    async def never(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        await reader.read()

    client = Upstreams(limit=1)
    async with serving(never) as (_, url):
        first = asyncio.create_task(post(client, url, total_s=5))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await post(client, url, total_s=0.1)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
    client.close()


async def test_an_idle_connection_the_provider_closed_is_not_reused() -> None:
    async def one_each(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(reply("200 OK", ["Content-Length: 2"], b"{}"))
        await writer.drain()  # then close, although the answer said nothing about it

    client = Upstreams()
    async with serving(one_each) as (server, url):
        assert await (await post(client, url)).read() == b"{}"
        await asyncio.wait_for(server.closed.wait(), 2)
        await asyncio.sleep(0.05)
        assert await (await post(client, url)).read() == b"{}"
    client.close()
    assert server.connections == 2


async def test_https_providers_are_verified_with_the_given_trust() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async with serving(keep_answering, tls=server_tls) as (_, url):
        client = Upstreams(tls=trusting)
        assert await (await post(client, url)).read() == b"{}"
        client.close()
        with pytest.raises(ConnectFailed):
            await post(Upstreams(tls=ssl.create_default_context()), url)

