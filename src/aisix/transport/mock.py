"""An in-memory `AsyncTransport` for pipeline tests, like httpx's `MockTransport`.

`MockTransport(handler)` calls `handler(request)` (sync or async) for every send and plays the
`MockResponse` it returns: `delay` before the head, the body whole or as a list of chunks with
`chunk_delay` between them, and `error` raised after the last chunk (a mid-stream failure).
A handler that raises a `TransportError` fails the send itself (a refused connect, a pool
timeout). Deadlines are honoured as the real transport does (`ReadTimeout`). `requests`
records what was sent; each response records whether it was released or closed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aisix.providers.base import UpstreamRequest
from aisix.transport.base import AsyncTransport
from aisix.transport.errors import ReadTimeout, TransportError


@dataclass(slots=True)
class MockResponse:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    #: the whole body, or the chunks a stream delivers one read at a time
    body: bytes | Sequence[bytes] = b""
    #: seconds before the head arrives
    delay: float = 0.0
    #: seconds before each chunk after the first
    chunk_delay: float = 0.0
    #: raised by the read after the last chunk (or by `send` when not streaming)
    error: TransportError | None = None


Handler = Callable[[UpstreamRequest], MockResponse | Awaitable[MockResponse]]


class MockUpstreamResponse:
    """What `MockTransport.send` returns: an `UpstreamResponse` over a `MockResponse`."""

    def __init__(self, spec: MockResponse, stream: bool) -> None:
        self.status = spec.status
        self.headers: dict[str, str] = {k.lower(): v for k, v in spec.headers.items()}
        body = spec.body
        self._chunks = [c for c in ([body] if isinstance(body, bytes) else body) if c]
        self._spec = spec
        self._stream = stream
        self._sent = 0
        self.released = False
        self.closed = False

    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def read_chunk(self, timeout: float | None) -> bytes:
        if self.closed:
            raise TransportError("read from a closed mock response")
        if self._sent >= len(self._chunks):
            if self._spec.error is not None:
                raise self._spec.error
            return b""
        if self._sent and self._spec.chunk_delay:
            await _sleep_within(self._spec.chunk_delay, timeout)
        chunk = self._chunks[self._sent]
        self._sent += 1
        return chunk

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class MockTransport:
    """An `AsyncTransport` answering from `handler`; see the module docstring."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[UpstreamRequest] = []
        self.responses: list[MockUpstreamResponse] = []

    async def send(
        self, request: UpstreamRequest, *, stream: bool, timeout: float | None
    ) -> MockUpstreamResponse:
        await request.buffer_body()  # handlers see the body whole
        self.requests.append(request)
        result = self._handler(request)
        spec = await result if inspect.isawaitable(result) else result
        assert isinstance(spec, MockResponse)
        total = spec.delay
        if not stream and not isinstance(spec.body, bytes):
            total += spec.chunk_delay * max(0, len(spec.body) - 1)
        if total:
            await _sleep_within(total, timeout)
        if not stream and spec.error is not None:
            raise spec.error
        response = MockUpstreamResponse(spec, stream)
        self.responses.append(response)
        return response


async def _sleep_within(seconds: float, timeout: float | None) -> None:
    if timeout is not None and seconds > timeout:
        await asyncio.sleep(timeout)
        raise ReadTimeout("upstream request timed out", timeout)
    await asyncio.sleep(seconds)


def as_transport(mock: MockTransport) -> AsyncTransport:
    """`mock` typed as the boundary it stands in for (mypy checks it conforms)."""
    return mock
