"""The upstream HTTP/1.1 client (`aisix.transport.h1`) against scripted servers on real sockets.

Each test starts an asyncio TCP (or TLS) server whose handler writes exact bytes, so framing
(content-length, chunked, close-delimited), keep-alive, deadlines, back-pressure, pool limits
and failures are checked on the wire, not through another HTTP library.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl

import pytest
import trustme

from aisix.transport import connection
from aisix.transport.errors import (
    ConnectError,
    ConnectionClosed,
    LocalProtocolError,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
)
from aisix.transport.h1 import HIGH_WATER, H1Transport, Response, encode_request
from fakes.scripted_server import JSON, LOOPS, Server, answer, json_after, keep_alive_json

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


async def endless_stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
    """Answers every request with a chunked stream that never ends."""
    while await s.read_request(r) is not None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await w.drain()


async def post(
    client: H1Transport, url: str, *, stream: bool = False, timeout: float = 2.0
) -> Response:
    return await client.post(
        url, {"Authorization": "Bearer sk-x"}, b'{"a":1}', tls=True, timeout=timeout, stream=stream
    )


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0)
        for _ in range(3):
            response = await post(client, server.url)
            assert (response.status, response.body()) == (200, JSON)
            assert response.headers["content-type"] == "application/json"
        await client.close()
    assert server.connections == 1
    first = server.requests[0]
    port = server.url.split(":")[2].split("/")[0]
    assert first.startswith(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:" + port.encode()
    )
    assert b"\r\nAuthorization: Bearer sk-x\r\n" in first
    assert first.endswith(b"Content-Length: 7\r\n\r\n" + b'{"a":1}')


async def test_chunked_and_close_delimited_bodies_and_gzip_are_decoded() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b'4\r\n{"ok\r\n7\r\n":true}\r\n0\r\n\r\n',
        answer(gzip.compress(JSON), b"Content-Encoding: gzip\r\n"),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + JSON,
    ]

    async def scripted(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            reply = replies.pop(0)
            w.write(reply)
            await w.drain()
            if b"Connection: close" in reply:
                w.close()
                return

    async with Server(scripted) as server:
        client = H1Transport(2.0)
        bodies = [(await post(client, server.url)).body() for _ in range(3)]
        await client.close()
    assert bodies == [JSON, JSON, JSON]
    assert server.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def interim(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(JSON))
        await w.drain()

    async with Server(interim) as server:
        client = H1Transport(2.0)
        response = await post(client, server.url)
        await client.close()
    assert (response.status, response.body()) == (200, JSON)


async def test_a_stream_arrives_chunk_by_chunk_with_a_deadline_per_read() -> None:
    release = asyncio.Event()

    async def paced(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n")
        await w.drain()
        await release.wait()
        w.write(b"6\r\ndata:2\r\n")
        await w.drain()
        await r.read()  # never finishes: wait for the client to give up

    async with Server(paced) as server:
        client = H1Transport(2.0)
        response = await post(client, server.url, stream=True, timeout=0.3)
        assert response.status == 200
        assert await response.read_chunk(0.3) == b"data:1"
        release.set()
        assert await response.read_chunk(0.3) == b"data:2"
        with pytest.raises(ReadTimeout):
            await response.read_chunk(0.2)
        await asyncio.wait_for(server.closed.wait(), 2)  # the timed-out connection is dropped
        await client.close()


async def test_the_whole_exchange_deadline_drops_the_connection() -> None:
    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            if len(s.requests) == 1:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # then stalls
                await w.drain()
                await asyncio.sleep(5)
            w.write(answer(JSON))
            await w.drain()

    async with Server(slow) as server:
        client = H1Transport(2.0)
        with pytest.raises(ReadTimeout):
            await post(client, server.url, timeout=0.3)
        response = await post(client, server.url)
        await client.close()
    assert response.body() == JSON
    assert server.connections == 2  # the half-read connection was not reused


async def test_an_upstream_closing_mid_body_is_connection_closed() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await w.drain()

    async with Server(cut) as server:
        client = H1Transport(2.0)
        with pytest.raises(ConnectionClosed):
            await post(client, server.url)
        response = await post(client, server.url, stream=True)
        assert await response.read_chunk(1) == b'{"partial'
        with pytest.raises(ConnectionClosed):
            await response.read_chunk(1)
        await client.close()


async def test_refused_garbage_and_bad_headers_are_typed_errors() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()

    client = H1Transport(2.0)
    async with Server(garbage) as server:
        with pytest.raises(RemoteProtocolError, match="malformed upstream response"):
            await post(client, server.url)
        url = server.url
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectError, match="could not connect"):
        await post(client, url)
    with pytest.raises(LocalProtocolError, match="line break"):
        encode_request(b"", {"X-Evil": "a\r\nInjected: 1"}, b"")
    with pytest.raises(LocalProtocolError, match="scheme"):
        await client.post("ftp://x/y", {}, b"", tls=True, timeout=1, stream=False)
    await client.close()


async def test_closing_an_unfinished_stream_drops_its_connection() -> None:
    async with Server(endless_stream) as server:
        client = H1Transport(2.0)
        response = await post(client, server.url, stream=True)
        assert await response.read_chunk(1) == b"hi"
        response.close()
        await asyncio.wait_for(server.closed.wait(), 2)
        second = await post(client, server.url, stream=True)
        assert await second.read_chunk(1) == b"hi"
        second.close()
        await client.close()
    assert server.connections == 2


async def test_a_large_stream_is_delivered_whole_under_back_pressure() -> None:
    payload = bytes(range(256)) * (4 * HIGH_WATER // 256)

    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        await w.drain()

    async with Server(big) as server:
        client = H1Transport(2.0)
        response = await post(client, server.url, stream=True)
        await asyncio.sleep(0.2)  # let the socket fill our buffer past the high-water mark
        received = []
        while data := await response.read_chunk(1):
            received.append(data)
            assert len(data) <= len(payload)
        await client.close()
    assert b"".join(received) == payload
    assert len(received) > 1


async def test_pool_limit_queues_callers_on_one_connection() -> None:
    async with Server(json_after(0.05)) as server:
        client = H1Transport(2.0, limit_per_host=1)
        results = await asyncio.gather(*(post(client, server.url) for _ in range(4)))
        await client.close()
    assert [r.body() for r in results] == [JSON] * 4
    assert (server.connections, server.max_open) == (1, 1)


async def test_idle_connections_expire() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0, idle_timeout_s=0.2)
        client.start()
        await post(client, server.url)
        await asyncio.wait_for(server.closed.wait(), 3)  # the sweeper closed the idle socket
        assert (await post(client, server.url)).body() == JSON
        await client.close()
    assert server.connections == 2


async def test_tls_verification_custom_ca_and_opt_out() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    async with Server(keep_alive_json, tls=server_tls) as server:
        client = H1Transport(2.0)
        with pytest.raises(ConnectError, match="TLS handshake"):
            await post(client, server.url)  # system trust does not know our CA
        trusted = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        ok = await client.post(server.url, {}, b"", tls=trusted, timeout=2, stream=False)
        unchecked = await client.post(server.url, {}, b"", tls=False, timeout=2, stream=False)
        await client.close()
    assert ok.body() == unchecked.body() == JSON


def test_host_header_omits_default_ports_and_brackets_ipv6() -> None:
    client = H1Transport(1.0)
    assert client.route("https://api.openai.com/v1/x", True).prefix.endswith(
        b"Host: api.openai.com\r\n"
    )
    assert client.route("http://[::1]:8080/v1/x?a=b", True).prefix == (
        b"POST /v1/x?a=b HTTP/1.1\r\nHost: [::1]:8080\r\n"
    )


async def test_a_released_stream_finishes_in_the_background_and_its_connection_is_reused() -> None:
    async def late_end(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            w.write(b"e\r\ndata: [DONE]\n\n\r\n")
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(b"0\r\n\r\n")  # the message ends after the payload did
            await w.drain()

    async with Server(late_end) as server:
        client = H1Transport(2.0)
        for _ in range(2):
            response = await post(client, server.url, stream=True)
            assert await response.read_chunk(1) == b"data: [DONE]\n\n"
            response.release()
            response.close()  # no effect while draining
            await asyncio.sleep(0.1)
        await client.close()
    assert server.connections == 1


async def test_a_released_stream_that_never_ends_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "DRAIN_SECONDS", 0.1)

    async with Server(endless_stream) as server:
        client = H1Transport(2.0)
        response = await post(client, server.url, stream=True)
        assert await response.read_chunk(1) == b"hi"
        response.release()
        await asyncio.wait_for(server.closed.wait(), 2)
        await client.close()


async def test_waiting_for_a_pooled_connection_counts_against_the_deadline() -> None:
    async with Server(json_after(0.5)) as server:
        client = H1Transport(2.0, limit_per_host=1)
        first = asyncio.ensure_future(post(client, server.url))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout):
            await post(client, server.url, timeout=0.2)  # never got the one connection
        assert (await first).body() == JSON
        await client.close()
    assert server.connections == 1


async def test_a_close_delimited_body_cut_by_our_deadline_is_not_complete() -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{")  # no length: ends at close
        await w.drain()
        await r.read()

    async with Server(trickle) as server:
        client = H1Transport(2.0)
        with pytest.raises(ReadTimeout):
            await post(client, server.url, timeout=0.2)
        response = await post(client, server.url, stream=True)
        assert await response.read_chunk(1) == b"{"
        response.close()
        await asyncio.sleep(0.05)  # the socket's close has been delivered by now
        with pytest.raises(ConnectionClosed):
            await response.read_chunk(1)
        await client.close()
