"""The h1 transport's pools and sockets: FIFO hand-off, shared TLS contexts and pools, TCP
keepalive, request methods, and mutual TLS, each on a real socket."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from aisix.providers.base import TLSConfig, UpstreamRequest
from aisix.transport.connection import Connection
from aisix.transport.errors import ConnectError, ConnectionClosed, LocalProtocolError, WriteError
from aisix.transport.h1 import H1Transport
from aisix.transport.tls import cache_info, context_for
from fakes.scripted_server import JSON, LOOPS, Server, answer, json_after, keep_alive_json

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def post(url: str, body: bytes = b"{}", tls: TLSConfig | None = None) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {}, body, tls or TLSConfig())


async def test_waiters_get_the_connection_in_arrival_order_on_the_wire() -> None:
    async with Server(json_after(0.02)) as server:
        client = H1Transport(2.0, limit_per_host=1)
        tasks = []
        for i in range(6):
            tasks.append(
                asyncio.ensure_future(
                    client.send(post(server.url, b"%d" % i), stream=False, timeout=5)
                )
            )
            await asyncio.sleep(0.001)  # a definite arrival order
        await asyncio.gather(*tasks)
        await client.close()
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in server.requests] == [b"%d" % i for i in range(6)]
    assert server.connections == 1


async def test_a_new_arrival_never_jumps_the_queue_when_a_connection_is_freed() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0, limit_per_host=1)
        pool = client.route(server.url, TLSConfig()).pool
        held = await pool.acquire(2.0, 2.0)
        order: list[str] = []

        async def take(name: str) -> Connection:
            conn = await pool.acquire(2.0, 2.0)
            order.append(name)
            return conn

        first = asyncio.ensure_future(take("first"))
        second = asyncio.ensure_future(take("second"))
        await asyncio.sleep(0.01)  # both are waiting in line now
        late = asyncio.ensure_future(take("late"))  # scheduled before the hand-off wakes `first`
        pool.release(held)
        conn = await first
        await asyncio.sleep(0.01)
        assert order == ["first"]  # `late` ran first but queued behind `second`
        pool.release(conn)
        pool.release(await second)
        assert await late is held
        assert order == ["first", "second", "late"]
        await client.close()


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0, limit_per_host=1)
        pool = client.route(server.url, TLSConfig()).pool
        held = await pool.acquire(2.0, 2.0)
        impatient = asyncio.ensure_future(pool.acquire(2.0, 0.05))
        patient = asyncio.ensure_future(pool.acquire(2.0, 2.0))
        with pytest.raises(TimeoutError):
            await impatient
        held.abort()  # a closed connection's slot goes to the next in line, who connects anew
        fresh = await patient
        assert fresh is not held and not fresh.closed
        assert pool.open == 1
        await client.close()


async def test_equal_tls_settings_share_one_context_and_one_pool(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    pem = ca.cert_pem.bytes().decode()
    async with Server(keep_alive_json, tls=server_tls) as server:
        client = H1Transport(2.0)
        hits_before, _ = cache_info()
        # two snapshots' worth of equal (not identical) settings, two models on one key
        for _ in range(3):
            response = await client.send(
                post(server.url, tls=TLSConfig(ca_cert=pem)), stream=False, timeout=2
            )
            assert response.body() == JSON
        a = client.route(server.url, TLSConfig(ca_cert=pem))
        b = client.route(
            server.url.replace("chat/completions", "embeddings"), TLSConfig(ca_cert=pem)
        )
        assert a.pool is b.pool
        assert context_for(TLSConfig(ca_cert=pem)) is a.pool.tls
        assert cache_info()[0] > hits_before
        # a different setting is a different pool
        assert client.route(server.url, TLSConfig(verify=False)).pool is not a.pool
        await client.close()
    assert server.connections == 1


async def test_ca_file_and_client_certificate_are_used(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    ca.configure_trust(server_tls)
    server_tls.verify_mode = ssl.CERT_REQUIRED
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_pem = tmp_path / "client.pem"
    ca.issue_cert("aisix-client@example.com").private_key_and_cert_chain_pem.write_to_path(
        str(client_pem)
    )
    peers: list[object] = []

    async def who(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        peers.append(w.get_extra_info("peercert"))
        await keep_alive_json(r, w, s)

    async with Server(who, tls=server_tls) as server:
        client = H1Transport(2.0)
        # no client certificate: TLS 1.3 reports the server's refusal after the handshake,
        # while (or after) the request is written
        with pytest.raises((ConnectError, ConnectionClosed, WriteError)):
            await client.send(
                post(server.url, tls=TLSConfig(ca_file=str(ca_file))), stream=False, timeout=2
            )
        mutual = TLSConfig(ca_file=str(ca_file), client_cert_file=str(client_pem))
        response = await client.send(post(server.url, tls=mutual), stream=False, timeout=2)
        assert response.body() == JSON
        await client.close()
    assert peers[-1]["subjectAltName"] == (("email", "aisix-client@example.com"),)  # type: ignore[index]
    missing = TLSConfig(client_cert_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConnectError, match="not found"):
        context_for(missing)


def _sockopt(client: H1Transport, level: int, name: int) -> int:
    (pool,) = client._pools.values()
    sock = pool.idle[0].transport.get_extra_info("socket")  # type: ignore[union-attr]
    return int(sock.getsockopt(level, name))


async def test_tcp_keepalive_is_set_on_upstream_sockets() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0, keepalive_idle_s=42, keepalive_interval_s=7, keepalive_count=3)
        await client.send(post(server.url), stream=False, timeout=2)
        assert _sockopt(client, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert _sockopt(client, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
        assert _sockopt(client, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
        assert _sockopt(client, socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        await client.close()
        off = H1Transport(2.0, keepalive=False)
        await off.send(post(server.url), stream=False, timeout=2)
        assert _sockopt(off, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        await off.close()


async def test_methods_and_optional_bodies_on_the_wire() -> None:
    async with Server(keep_alive_json) as server:
        client = H1Transport(2.0)
        base = server.url.rsplit("/", 2)[0]
        for method, body in [("GET", b""), ("DELETE", b""), ("PUT", b"{}"), ("DELETE", b"{}")]:
            req = UpstreamRequest(method, base + "/files/f1?x=1", {"Accept": "*/*"}, body)
            response = await client.send(req, stream=False, timeout=2)
            assert (response.status, response.body()) == (200, JSON)
        with pytest.raises(LocalProtocolError, match="method"):
            await client.send(UpstreamRequest("HEAD", base, {}), stream=False, timeout=2)
        await client.close()
    get, delete, put, delete_body = server.requests
    assert get.startswith(b"GET /v1/files/f1?x=1 HTTP/1.1\r\n")
    assert b"content-length" not in get.lower()
    assert delete.startswith(b"DELETE /v1/files/f1?x=1 HTTP/1.1\r\n")
    assert b"content-length" not in delete.lower()
    assert put.startswith(b"PUT ") and put.endswith(b"Content-Length: 2\r\n\r\n{}")
    assert delete_body.endswith(b"Content-Length: 2\r\n\r\n{}")
    assert server.connections == 1


async def test_headers_are_lowercased_and_repeats_joined() -> None:
    reply = answer(JSON, b"X-Multi: a\r\nx-multi: b\r\nRetry-After: 3\r\n")

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(r)
        w.write(reply)
        await w.drain()

    async with Server(handler) as server:
        client = H1Transport(2.0)
        response = await client.send(post(server.url), stream=False, timeout=2)
        assert response.headers["x-multi"] == "a, b"
        assert response.headers["retry-after"] == "3"
        await client.close()
