"""Upstream I/O for the pipeline, and the mapping of transport faults to errors.

`Transport` owns the upstream HTTP client (`aisix.transport.h1`: keep-alive pools) for the
app's lifetime; `Transport.upstream` is that client as an `AsyncTransport` (the boundary the
pipeline moves to). `call_json` and `open_stream` are the older call shapes over the same
client: `call_json` performs a non-streaming call under the model's total deadline;
`open_stream` returns once the upstream has answered 2xx headers, with per-read deadlines so
the head, the first chunk and every gap between chunks are bounded by `stream_timeout`. Every
failure becomes the `GatewayError` the contract names (`aisix.transport.errors.gateway_error`),
never a raw client exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from aisix.errors import (
    GatewayError,
    UpstreamDecodeError,
    UpstreamFault,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.providers.base import PreparedRequest, UpstreamTarget
from aisix.settings import UpstreamSettings
from aisix.transport.base import AsyncTransport
from aisix.transport.errors import TransportError, gateway_error
from aisix.transport.h1 import H1Transport, Response

FaultParser = Callable[[bytes], UpstreamFault]
#: how much of a streamed error answer is read for its message
_ERROR_BODY_LIMIT = 64 * 1024


def parse_retry_after(raw: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def timeout_error(ms: int) -> UpstreamTimeout:
    return UpstreamTimeout(f"upstream request timed out after {ms}ms")


class Transport:
    def __init__(
        self,
        connect_timeout_ms: int,
        pool_size_per_host: int = 0,
        idle_timeout_ms: int = 30_000,
        client: H1Transport | None = None,
    ) -> None:
        self._client = client or H1Transport(
            connect_timeout_ms / 1000, pool_size_per_host, idle_timeout_ms / 1000
        )

    @classmethod
    def from_settings(cls, upstream: UpstreamSettings) -> Transport:
        """The transport for the bootstrap `upstream` section (limits, keepalive)."""
        keepalive = upstream.tcp_keepalive
        client = H1Transport(
            upstream.connect_timeout_ms / 1000,
            upstream.pool_size_per_host,
            upstream.idle_timeout_ms / 1000,
            max_response_bytes=upstream.max_response_bytes,
            max_header_bytes=upstream.max_header_bytes,
            max_headers=upstream.max_headers,
            keepalive=keepalive.enabled,
            keepalive_idle_s=keepalive.idle_secs,
            keepalive_interval_s=keepalive.interval_secs,
            keepalive_count=keepalive.count,
        )
        return cls(upstream.connect_timeout_ms, client=client)

    @property
    def upstream(self) -> AsyncTransport:
        """The client as the `AsyncTransport` boundary."""
        return self._client

    async def start(self) -> None:
        self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def call_json(
        self,
        target: UpstreamTarget,
        request: PreparedRequest,
        timeout_ms: int,
        parse_error: FaultParser | None = None,
    ) -> tuple[dict[str, Any], int]:
        """POST and parse a JSON object answer; return (body, status)."""
        try:
            response = await self._client.post(
                request.url,
                request.headers,
                request.body,
                tls=target.ssl,
                timeout=timeout_ms / 1000 if timeout_ms else None,
                stream=False,
            )
        except TransportError as exc:
            raise gateway_error(exc) from None
        raw = response.body()
        if response.status >= 300:
            raise _status_error(response, raw, parse_error)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamDecodeError("upstream returned a body that is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise UpstreamDecodeError("upstream returned JSON that is not an object")
        return parsed, response.status

    @asynccontextmanager
    async def open_stream(
        self,
        target: UpstreamTarget,
        request: PreparedRequest,
        stream_timeout_ms: int,
        parse_error: FaultParser | None = None,
    ) -> AsyncIterator[Response]:
        """Open a streaming POST; yields the response once 2xx headers have arrived. Every
        read (the head, the first chunk, each gap) is bounded by `stream_timeout_ms`."""
        timeout = stream_timeout_ms / 1000 if stream_timeout_ms else None
        try:
            response = await self._client.post(
                request.url,
                request.headers,
                request.body,
                tls=target.ssl,
                timeout=timeout,
                stream=True,
            )
        except TransportError as exc:
            raise gateway_error(exc) from None
        try:
            if response.status >= 300:
                body = await _error_body(response, timeout)
                raise _status_error(response, body, parse_error)
            yield response
        finally:
            response.close()


async def _error_body(response: Response, timeout: float | None) -> bytes:
    """The (bounded) body of a streamed error answer; whatever arrived if reading fails."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < _ERROR_BODY_LIMIT:
            data = await response.read_chunk(timeout)
            if not data:
                break
            parts.append(data)
            size += len(data)
    except TransportError:
        pass
    return b"".join(parts)


def _status_error(response: Response, raw: bytes, parse: FaultParser | None) -> GatewayError:
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return upstream_status_error(response.status, raw, retry_after, parse)
