"""Every transport failure produced by a real server on a real socket, and its contract error.

Each test makes the wire misbehave in one way (nobody listening, a listener that never
accepts, a pool at its limit, a stalled answer, garbage, an oversized head or body, a peer
that resets while we write) and checks both the typed `TransportError` the h1 client raises
and what `gateway_error` (through the legacy `Transport.call_json` as well) makes of it: the
contract status and code, `reached_upstream`, and whether it may cool the target (`reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
from collections.abc import Iterator

import pytest

from aisix.errors import GatewayError
from aisix.providers.base import PreparedRequest, TLSConfig, UpstreamRequest
from aisix.providers.transport import Transport
from aisix.transport.errors import (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportError,
    WriteError,
    gateway_error,
)
from aisix.transport.h1 import H1Transport
from fakes.scripted_server import JSON, LOOPS, Server, answer, json_after, keep_alive_json

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def request(url: str, body: bytes = b'{"a":1}') -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"Content-Type": "application/json"}, body)


async def fails_with(
    client: H1Transport, url: str, expected: type[TransportError], timeout: float = 2.0
) -> TransportError:
    with pytest.raises(expected) as caught:
        await client.send(request(url), stream=False, timeout=timeout)
    return caught.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def never_accepting() -> Iterator[int]:
    """A listener whose accept queue is full: further connection attempts hang in SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(8):  # the kernel queues backlog + 1; fill it whatever that is
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_refused_connect_is_connect_error_that_never_reached_the_upstream() -> None:
    client = H1Transport(2.0)
    exc = await fails_with(client, f"http://127.0.0.1:{closed_port()}/v1/x", ConnectError)
    err = gateway_error(exc)
    assert (err.status, err.code, err.reached_upstream) == (502, "connection_error", False)
    assert err.reason == "transport_error" and err.retryable
    await client.close()


async def test_a_listener_that_never_accepts_is_a_connect_timeout() -> None:
    client = H1Transport(0.3)
    with never_accepting() as port:
        exc = await fails_with(client, f"http://127.0.0.1:{port}/v1/x", ConnectTimeout)
    assert isinstance(exc, ConnectTimeout) and exc.timeout == 0.3
    err = gateway_error(exc)
    assert (err.status, err.code, err.reached_upstream) == (502, "connection_error", False)
    assert err.message == "could not connect to the upstream within 300ms"
    assert err.reason == "transport_error"
    await client.close()


async def test_a_full_pool_is_a_pool_timeout_that_never_cools_the_target() -> None:
    async with Server(json_after(0.6)) as server:
        client = H1Transport(2.0, limit_per_host=1)
        busy = asyncio.ensure_future(client.send(request(server.url), stream=False, timeout=2))
        await asyncio.sleep(0.1)
        exc = await fails_with(client, server.url, PoolTimeout, timeout=0.2)
        err = gateway_error(exc)
        assert (err.status, err.type, err.reached_upstream) == (504, "timeout", False)
        assert err.reason is None and err.retryable  # retry elsewhere, no cooldown
        assert (await busy).body() == JSON
        await client.close()
    assert server.connections == 1  # the waiter never opened a second connection


async def test_a_stalled_answer_is_a_read_timeout() -> None:
    async with Server(json_after(5)) as server:
        client = H1Transport(2.0)
        exc = await fails_with(client, server.url, ReadTimeout, timeout=0.25)
        err = gateway_error(exc)
        assert (err.status, err.type, err.reached_upstream) == (504, "timeout", True)
        assert err.message == "upstream request timed out after 250ms"
        assert err.reason == "request_timeout"
        await client.close()


async def test_garbage_is_a_remote_protocol_error() -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()

    async with Server(garbage) as server:
        client = H1Transport(2.0)
        err = gateway_error(await fails_with(client, server.url, RemoteProtocolError))
        assert (err.status, err.code, err.reached_upstream) == (502, "connection_error", True)
        await client.close()


def scripted(reply: bytes) -> Server:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(r) is not None:
            w.write(reply)
            await w.drain()

    return Server(handler)


@pytest.mark.parametrize(
    "reply",
    [
        answer(b"x" * 2000),  # Content-Length over the cap: refused from the head
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3e8\r\n"
        + b"x" * 1000
        + b"\r\n"
        + b"3e8\r\n"
        + b"x" * 1000
        + b"\r\n0\r\n\r\n",
        answer(gzip.compress(b"x" * 100_000), b"Content-Encoding: gzip\r\n"),  # small, inflates
    ],
    ids=["content-length", "chunked", "gzip"],
)
async def test_a_body_over_the_cap_is_response_too_large(reply: bytes) -> None:
    async with scripted(reply) as server:
        client = H1Transport(2.0, max_response_bytes=1500)
        exc = await fails_with(client, server.url, ResponseTooLarge)
        err = gateway_error(exc)
        assert (err.status, err.code) == (502, "upstream_decode_error")
        assert err.message == "upstream response exceeds the 1500-byte limit"
        assert err.reason is None and not err.retryable
        await client.close()


async def test_a_stream_is_not_capped_by_max_response_bytes() -> None:
    body = b"data: " + b"x" * 5000 + b"\n\n"
    async with scripted(answer(body)) as server:
        client = H1Transport(2.0, max_response_bytes=1000)
        response = await client.send(request(server.url), stream=True, timeout=2)
        received = b""
        while chunk := await response.read_chunk(2):
            received += chunk
        assert received == body
        await client.close()


@pytest.mark.parametrize(
    "extra",
    [
        b"".join(b"X-H%d: v\r\n" % i for i in range(120)),  # 120 headers > 100
        b"X-Big: " + b"v" * 70_000 + b"\r\n",  # one header > 64 KiB
    ],
    ids=["count", "size"],
)
async def test_a_head_over_the_caps_is_a_remote_protocol_error(extra: bytes) -> None:
    async with scripted(answer(JSON, extra)) as server:
        client = H1Transport(2.0)
        exc = await fails_with(client, server.url, RemoteProtocolError)
        assert "head exceeds 65536 bytes or 100 headers" in str(exc)
        await client.close()


async def test_a_head_that_trickles_past_the_cap_is_cut_off() -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(200):  # one header value that never ends, 1 KiB at a time
            w.write(b"v" * 1024)
            await w.drain()
            await asyncio.sleep(0.001)
        await r.read()

    async with Server(trickle) as server:
        client = H1Transport(2.0, max_header_bytes=16 * 1024)
        exc = await fails_with(client, server.url, RemoteProtocolError, timeout=5)
        assert "head exceeds 16384 bytes" in str(exc)
        await asyncio.wait_for(server.closed.wait(), 2)  # and the connection was dropped
        await client.close()


async def test_a_peer_resetting_while_we_write_is_a_write_error() -> None:
    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await r.readuntil(b"\r\n\r\n")  # the head only, then a hard reset (RST)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    async with Server(reset) as server:
        client = H1Transport(2.0)
        body = b"x" * (64 * 1024 * 1024)  # far more than the socket buffers hold
        with pytest.raises(WriteError) as caught:
            await client.send(request(server.url, body), stream=False, timeout=5)
        err = gateway_error(caught.value)
        assert (err.status, err.code, err.reached_upstream) == (502, "connection_error", True)
        await client.close()


async def test_the_legacy_call_json_maps_through_gateway_error() -> None:
    async with Server(json_after(0.6)) as server:
        transport = Transport(2000, pool_size_per_host=1)
        prepared = PreparedRequest(server.url, {}, b"{}")

        class Target:
            adapter = "openai"
            model_name = "m"
            ssl = True

        first = asyncio.ensure_future(transport.call_json(Target(), prepared, 2000))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        with pytest.raises(GatewayError) as caught:
            await transport.call_json(Target(), prepared, 200)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.reason) == (504, None)
        assert (await first)[0] == {"ok": True}
        await transport.close()


async def test_a_bad_tls_setting_is_a_connect_error_without_key_material() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0)
        secret_looking = "-----BEGIN CERTIFICATE-----\nnot-a-cert\n-----END CERTIFICATE-----\n"
        url = server.url.replace("http://", "https://")
        bad = UpstreamRequest("POST", url, {}, b"", TLSConfig(ca_cert=secret_looking))
        with pytest.raises(ConnectError) as caught:
            await client.send(bad, stream=False, timeout=2)
        assert "not-a-cert" not in str(caught.value)
        await client.close()
