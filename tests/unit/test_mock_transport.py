"""`MockTransport` (the in-process `AsyncTransport`) and the pure `gateway_error` map."""

from __future__ import annotations

import pytest

from aisix.errors import GatewayError
from aisix.providers.base import UpstreamRequest
from aisix.transport.base import AsyncTransport
from aisix.transport.errors import (
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    LocalProtocolError,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportError,
    WriteError,
    gateway_error,
)
from aisix.transport.mock import MockResponse, MockTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def req(path: str = "/v1/chat/completions") -> UpstreamRequest:
    return UpstreamRequest("POST", "http://upstream" + path, {"x": "1"}, b"{}")


async def test_sync_and_async_handlers_answer_and_requests_are_recorded() -> None:
    def sync(request: UpstreamRequest) -> MockResponse:
        return MockResponse(201, {"X-Up": "yes"}, b'{"ok":1}')

    async def asynchronous(request: UpstreamRequest) -> MockResponse:
        return MockResponse(body=request.url.encode())

    for handler, status, body in (
        (sync, 201, b'{"ok":1}'),
        (asynchronous, 200, b"http://upstream/a"),
    ):
        transport: AsyncTransport = MockTransport(handler)
        response = await transport.send(req("/a"), stream=False, timeout=1)
        assert (response.status, response.body()) == (status, body)
    assert response.headers == {}
    mock = MockTransport(sync)
    response = await mock.send(req(), stream=False, timeout=1)
    assert response.headers["x-up"] == "yes"
    assert [r.url for r in mock.requests] == ["http://upstream/v1/chat/completions"]


async def test_streams_deliver_chunks_then_end_or_fail_mid_stream() -> None:
    chunks = [b"data: 1\n\n", b"data: 2\n\n"]
    mock = MockTransport(lambda r: MockResponse(body=chunks, error=ConnectionClosed("cut")))
    response = await mock.send(req(), stream=True, timeout=1)
    assert [await response.read_chunk(1), await response.read_chunk(1)] == chunks
    with pytest.raises(ConnectionClosed):
        await response.read_chunk(1)
    clean = await MockTransport(lambda r: MockResponse(body=chunks)).send(
        req(), stream=True, timeout=1
    )
    assert await clean.read_chunk(1) == chunks[0]
    assert await clean.read_chunk(1) == chunks[1]
    assert await clean.read_chunk(1) == b""
    clean.release()
    clean.close()
    assert mock.responses[0].released is False
    assert (clean.released, clean.closed) == (True, True)


async def test_delays_honour_the_deadlines_like_the_real_transport() -> None:
    slow_head = MockTransport(lambda r: MockResponse(delay=0.2))
    with pytest.raises(ReadTimeout):
        await slow_head.send(req(), stream=False, timeout=0.05)
    gap = MockTransport(lambda r: MockResponse(body=[b"a", b"b"], chunk_delay=0.2))
    response = await gap.send(req(), stream=True, timeout=0.05)
    assert await response.read_chunk(0.05) == b"a"
    with pytest.raises(ReadTimeout):
        await response.read_chunk(0.05)


async def test_a_handler_raising_a_transport_error_fails_the_send() -> None:
    def refuse(request: UpstreamRequest) -> MockResponse:
        raise ConnectError("refused")

    with pytest.raises(ConnectError):
        await MockTransport(refuse).send(req(), stream=False, timeout=1)


@pytest.mark.parametrize(
    ("exc", "status", "code", "reached", "reason", "retryable"),
    [
        (ConnectError("no"), 502, "connection_error", False, "transport_error", True),
        (ConnectTimeout("t", 0.5), 502, "connection_error", False, "transport_error", True),
        (PoolTimeout("p", 1.0), 504, None, False, None, True),
        (ReadTimeout("r", 2.0), 504, None, True, "request_timeout", True),
        (WriteError("w"), 502, "connection_error", True, "transport_error", True),
        (RemoteProtocolError("x"), 502, "connection_error", True, "transport_error", True),
        (ConnectionClosed("c"), 502, "connection_error", True, "transport_error", True),
        (ResponseTooLarge(10), 502, "upstream_decode_error", True, None, False),
        (LocalProtocolError("bad header"), 502, "connection_error", False, None, True),
    ],
)
def test_gateway_error_map(
    exc: TransportError,
    status: int,
    code: str | None,
    reached: bool,
    reason: str | None,
    retryable: bool,
) -> None:
    err = gateway_error(exc)
    assert isinstance(err, GatewayError)
    assert (err.status, err.code, err.reached_upstream, err.reason, err.retryable) == (
        status,
        code,
        reached,
        reason,
        retryable,
    )
    assert exc.reached_upstream is reached
    assert exc.cools_target is (reason is not None)


def test_timeouts_are_timeout_errors_and_messages_name_the_limit() -> None:
    assert isinstance(ReadTimeout("r", 1.5), TimeoutError)
    assert gateway_error(ReadTimeout("r", 1.5)).message == "upstream request timed out after 1500ms"
    assert gateway_error(PoolTimeout("p", 0.2)).message == (
        "no connection to the upstream became free within 200ms"
    )
