"""Streamed request bodies (`UpstreamRequest.stream_body`) through `aisix.transport.h1`.

Scripted servers on real sockets check on the wire that a body is sent as it is produced
(chunked, or raw with its Content-Length), that the upstream sees the first part before the
producer makes the next one, that an upstream answering early stops the upload and does not
get its connection reused, that an upstream that stops reading is a `WriteTimeout`, and that a
producer's failure or a wrong length drops the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from aisix.providers.base import StreamedBody, TLSConfig, UpstreamRequest
from aisix.transport.errors import LocalProtocolError, WriteTimeout
from aisix.transport.h1 import H1Transport
from fakes.scripted_server import LOOPS, Server, answer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


class Upload:
    """A server that reads each request's body piece by piece (chunked or Content-Length),
    sets `first_part` once it has some of it, and answers with what it got."""

    def __init__(self) -> None:
        self.first_part = asyncio.Event()
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []

    async def __call__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            self.heads.append(head)
            lower = head.lower()
            body = b""
            if b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await r.readuntil(b"\r\n")).strip(), 16)
                    chunk = await r.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
                    self.first_part.set()
            else:
                length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    part = await r.read(length - len(body))
                    if not part:
                        return  # cut before the whole body
                    body += part
                    self.first_part.set()
            self.bodies.append(body)
            w.write(answer(b"got %d" % len(body)))
            await w.drain()


def request(url: str, body: StreamedBody) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"X-Test": "1"}, b"", TLSConfig(), stream_body=body)


async def two_parts(upload: Upload, closed: list[bool]) -> AsyncGenerator[bytes, None]:
    """Yields b"first-", then b"second" only once the upstream has the first part."""
    try:
        yield b"first-"
        await asyncio.wait_for(upload.first_part.wait(), 5.0)
        yield b"second"
    finally:
        closed.append(True)


async def test_a_chunked_body_reaches_the_upstream_as_it_is_produced() -> None:
    upload = Upload()
    async with Server(upload) as server:
        client = H1Transport(2.0)
        closed: list[bool] = []
        response = await client.send(
            request(server.url, StreamedBody(two_parts(upload, closed))), stream=False, timeout=5
        )
        assert (response.status, response.body()) == (200, b"got 12")
        assert upload.bodies == [b"first-second"] and closed == [True]
        assert b"\r\nTransfer-Encoding: chunked\r\n" in upload.heads[0]
        assert b"content-length" not in upload.heads[0].lower()
        # the connection went back to the pool: the next call reuses it
        upload.first_part = asyncio.Event()
        again = await client.send(
            request(server.url, StreamedBody(two_parts(upload, []))), stream=True, timeout=5
        )
        assert again.status == 200 and await again.read_chunk(5) == b"got 12"
        again.close()
        await client.close()
    assert server.connections == 1


async def test_a_body_of_known_length_is_sent_raw_with_its_content_length() -> None:
    upload = Upload()
    async with Server(upload) as server:
        client = H1Transport(2.0)
        body = StreamedBody(two_parts(upload, []), length=12)
        response = await client.send(request(server.url, body), stream=False, timeout=5)
        assert (response.status, response.body()) == (200, b"got 12")
        assert b"\r\nContent-Length: 12\r\n" in upload.heads[0]
        assert b"chunked" not in upload.heads[0]
        await client.close()


async def test_a_body_longer_or_shorter_than_its_length_is_refused() -> None:
    upload = Upload()
    async with Server(upload) as server:
        client = H1Transport(2.0)
        for length in (5, 20):
            upload.first_part = asyncio.Event()
            body = StreamedBody(two_parts(upload, []), length=length)
            with pytest.raises(LocalProtocolError, match="Content-Length"):
                await client.send(request(server.url, body), stream=False, timeout=1)
        await client.close()
    assert server.connections == 2  # each broken exchange took its connection down


async def test_an_early_answer_stops_the_upload_and_its_connection_is_not_reused() -> None:
    async def refuse(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await w.drain()
        await asyncio.sleep(2)  # keeps the socket open, never reads the body

    produced: list[int] = []

    async def endless() -> AsyncGenerator[bytes, None]:
        while True:
            produced.append(1)
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    async with Server(refuse) as server:
        client = H1Transport(2.0)
        response = await client.send(
            request(server.url, StreamedBody(endless())), stream=True, timeout=5
        )
        assert response.status == 413 and await response.read_chunk(5) == b"big"
        assert await response.read_chunk(5) == b""
        assert len(produced) < 200  # stopped once the answer came, not at the timeout
        response.close()
        second = await client.send(
            request(server.url, StreamedBody(endless())), stream=True, timeout=5
        )
        assert second.status == 413
        second.close()
        await client.close()
    assert server.connections == 2


async def test_an_upstream_that_stops_reading_is_a_write_timeout() -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)  # reads nothing more: the socket buffers fill

    async def flood() -> AsyncGenerator[bytes, None]:
        block = b"y" * 65536
        for _ in range(4096):  # 256 MiB: far beyond any socket buffer
            yield block

    async with Server(stall) as server:
        client = H1Transport(2.0)
        with pytest.raises(WriteTimeout):
            await client.send(request(server.url, StreamedBody(flood())), stream=True, timeout=0.5)
        await client.close()


async def test_a_failing_producer_drops_the_connection() -> None:
    upload = Upload()

    async def gone() -> AsyncGenerator[bytes, None]:
        yield b"part"
        raise ConnectionResetError("the client went away")

    async with Server(upload) as server:
        client = H1Transport(2.0)
        with pytest.raises(ConnectionResetError):
            await client.send(request(server.url, StreamedBody(gone())), stream=True, timeout=2)
        await asyncio.wait_for(server.closed.wait(), 2)
        await client.close()
    assert upload.bodies == []  # the upstream never got a complete request
