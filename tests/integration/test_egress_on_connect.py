"""The egress policy is checked again on connect, with the resolved address (issue 12 item 7):
a name that resolves into a denied network is refused although the name itself passed."""

from __future__ import annotations

import asyncio

import pytest

from aisix.egress import EgressPolicy
from aisix.errors import UpstreamConnectionError
from aisix.providers.base import UpstreamRequest
from aisix.transport.errors import ConnectError, gateway_error
from aisix.transport.h1 import H1Transport


async def serve_once() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_denied_resolved_address_is_refused(host: str) -> None:
    async def main() -> None:
        server, port = await serve_once()
        try:
            denied = H1Transport(2.0, egress=EgressPolicy.build((), ["127.0.0.0/8", "::1/128"]))
            request = UpstreamRequest("POST", f"http://{host}:{port}/v1/x", {}, b"{}")
            with pytest.raises(ConnectError, match="denied network") as refused:
                await denied.send(request, stream=False, timeout=2.0)
            err = gateway_error(refused.value)
            assert isinstance(err, UpstreamConnectionError) and not err.reached_upstream
            await denied.close()
            allowed = H1Transport(2.0, egress=EgressPolicy.build((), ["169.254.0.0/16"]))
            answer = await allowed.send(request, stream=False, timeout=2.0)
            assert answer.status == 200 and answer.body() == b"{}"
            await allowed.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
