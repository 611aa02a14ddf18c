"""The transport protocol, modelled on httpx's `_transports/base.py`: one async method.

`AsyncTransport.send(request, stream=, timeout=)` sends an authorized `UpstreamRequest` and
returns an `UpstreamResponse` once the whole answer (non-streamed: `timeout` bounds the whole
exchange) or its head (streamed: `timeout` bounds every read) has arrived. Failures are
`aisix.transport.errors.TransportError`s; `gateway_error` turns them into contract errors.
Status and headers are the upstream's, whatever the status: the caller classifies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aisix.providers.base import UpstreamRequest


class UpstreamResponse(Protocol):
    """One upstream answer. Header names are lowercased."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def body(self) -> bytes:
        """Non-streamed: the complete (decoded) body."""
        ...

    async def read_chunk(self, timeout: float | None) -> bytes:
        """Streamed: the next body bytes, waiting up to `timeout`; b"" at the end."""
        ...

    def release(self) -> None:
        """The payload is complete (e.g. an SSE terminal event): let the connection go back to
        the pool once the message ends, discarding what still arrives."""
        ...

    def close(self) -> None:
        """Done; an unfinished response takes its connection down with it."""
        ...


class AsyncTransport(Protocol):
    async def send(
        self, request: UpstreamRequest, *, stream: bool, timeout: float | None
    ) -> UpstreamResponse: ...
