"""Egress proxies on real sockets: CONNECT tunnels (https) and absolute-form requests (http)
through `tests/fakes/connect_proxy.py`, which is first shown to work for aiohttp's client."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
import trustme

from aisix.providers.base import TLSConfig, UpstreamRequest
from aisix.settings import UpstreamProxy
from aisix.transport.errors import ConnectError
from aisix.transport.h1 import H1Transport
from aisix.transport.proxy import proxy_for
from fakes.connect_proxy import ConnectProxy
from fakes.scripted_server import JSON, LOOPS, Server, keep_alive_json

pytestmark = pytest.mark.anyio


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return Server(keep_alive_json, tls=context)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiohttp's proxy_auth, still supported
async def test_the_fake_proxy_serves_aiohttp_over_connect_and_absolute_form(
    ca: trustme.CA,
) -> None:
    trusted = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    async with (
        ConnectProxy("u", "pw") as proxy,
        tls_server(ca) as secure,
        Server(keep_alive_json) as plain,
        aiohttp.ClientSession() as session,
    ):
        auth = aiohttp.BasicAuth("u", "pw")
        for url in (secure.url, plain.url):
            async with session.post(
                url, data=b"{}", proxy=proxy.url(), proxy_auth=auth, ssl=trusted
            ) as r:
                assert (r.status, await r.read()) == (200, JSON)
        async with session.post(plain.url, data=b"{}", proxy=proxy.url()) as refused:
            assert refused.status == 407
    assert proxy.tunnels == [f"localhost:{secure.port}"]
    assert proxy.forwarded == [f"POST {plain.url} HTTP/1.1"]
    assert plain.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


async def test_https_upstreams_are_tunnelled_with_basic_credentials(ca: trustme.CA) -> None:
    tls = TLSConfig(ca_cert=ca.cert_pem.bytes().decode())
    async with ConnectProxy("team", "p@ss:word") as proxy, tls_server(ca) as server:
        client = H1Transport(2.0)
        via = proxy.url("team:p%40ss%3Aword")
        for _ in range(3):
            req = UpstreamRequest(
                "POST", server.url, {"Authorization": "Bearer sk-x"}, b"{}", tls, via
            )
            response = await client.send(req, stream=False, timeout=2)
            assert (response.status, response.body()) == (200, JSON)
        await client.close()
    assert proxy.tunnels == [f"localhost:{server.port}"]  # one tunnel, kept alive
    assert proxy.credentials == ["Basic dGVhbTpwQHNzOndvcmQ="]  # team:p@ss:word
    assert server.connections == 1 and len(server.requests) == 3
    first = server.requests[0]
    assert first.startswith(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\n" % server.port
    )
    assert b"proxy-authorization" not in first.lower()


async def test_http_upstreams_go_in_absolute_form_and_credentials_stay_at_the_proxy() -> None:
    async with ConnectProxy("u", "pw") as proxy, Server(keep_alive_json) as server:
        client = H1Transport(2.0)
        for method in ("POST", "GET"):
            req = UpstreamRequest(
                method, server.url, {}, b"{}" if method == "POST" else b"", proxy=proxy.url("u:pw")
            )
            assert (await client.send(req, stream=False, timeout=2)).body() == JSON
        await client.close()
    assert proxy.forwarded == [f"POST {server.url} HTTP/1.1", f"GET {server.url} HTTP/1.1"]
    assert proxy.tunnels == []
    assert all(b"proxy-authorization" not in r.lower() for r in server.requests)
    assert server.requests[1].startswith(b"GET /v1/chat/completions HTTP/1.1\r\n")


async def test_a_refused_or_absent_proxy_is_a_connect_error_without_its_password(
    ca: trustme.CA,
) -> None:
    tls = TLSConfig(ca_cert=ca.cert_pem.bytes().decode())
    async with ConnectProxy("u", "right") as proxy, tls_server(ca) as server:
        client = H1Transport(2.0)
        wrong = UpstreamRequest("POST", server.url, {}, b"{}", tls, proxy.url("u:hunter2"))
        with pytest.raises(ConnectError, match=r"refused the tunnel \(407\)") as caught:
            await client.send(wrong, stream=False, timeout=2)
        assert "hunter2" not in str(caught.value)
        port = proxy.port
    await asyncio.sleep(0.05)
    gone = UpstreamRequest("POST", server.url, {}, b"{}", tls, f"http://u:hunter2@127.0.0.1:{port}")
    with pytest.raises(ConnectError, match="could not connect to the egress proxy") as caught:
        await client.send(gone, stream=False, timeout=2)
    assert "hunter2" not in str(caught.value)
    await client.close()
    assert server.connections == 0


async def test_no_proxy_hosts_go_direct_and_others_through_the_proxy() -> None:
    async with ConnectProxy() as proxy, Server(keep_alive_json) as server:
        settings = UpstreamProxy(url=proxy.url(), no_proxy=["127.0.0.1"])
        direct_url = server.url.replace("localhost", "127.0.0.1")
        assert proxy_for(direct_url, settings, {}) is None
        assert proxy_for(server.url, settings, {}) == proxy.url()
        client = H1Transport(2.0)
        for url in (direct_url, server.url):
            req = UpstreamRequest("POST", url, {}, b"{}", proxy=proxy_for(url, settings, {}))
            assert (await client.send(req, stream=False, timeout=2)).body() == JSON
        await client.close()
    assert proxy.forwarded == [f"POST {server.url} HTTP/1.1"]  # only the non-bypassed one
    assert server.connections == 2
