"""Upstream I/O for the pipeline, and the mapping of transport faults to errors.

`Transport` owns the upstream HTTP client (`aisix.transport.h1`: keep-alive pools) for the
app's lifetime; `Transport.upstream` is that client as an `AsyncTransport`, and every call goes
through its one `send` method (so `client=` may be any `AsyncTransport`, such as the in-memory
`aisix.transport.mock.MockTransport` of the pipeline tests). `send_json` and
`stream` take an `UpstreamRequest` (method, TLS value, egress proxy): `send_json` performs a
non-streaming call under the model's total deadline; `stream` yields once the upstream has
answered 2xx headers, with per-read deadlines so the head, the first chunk and every gap
between chunks are bounded by `stream_timeout`. A non-2xx answer's body is read by the target
family's `parse_error`. Every
failure becomes the `GatewayError` the contract names (`aisix.transport.errors.gateway_error`),
never a raw client exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from aisix.egress import EgressPolicy
from aisix.errors import (
    GatewayError,
    UpstreamDecodeError,
    UpstreamFault,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.providers.base import UpstreamRequest
from aisix.settings import UpstreamSettings
from aisix.transport.base import AsyncTransport, UpstreamResponse
from aisix.transport.errors import TransportError, gateway_error
from aisix.transport.h1 import H1Transport

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
        client: AsyncTransport | None = None,
    ) -> None:
        self._client: AsyncTransport = client or H1Transport(
            connect_timeout_ms / 1000, pool_size_per_host, idle_timeout_ms / 1000
        )

    @classmethod
    def from_settings(cls, upstream: UpstreamSettings) -> Transport:
        """The transport for the bootstrap `upstream` section (limits, keepalive)."""
        client = H1Transport(
            upstream.connect_timeout_ms / 1000,
            upstream.pool_size_per_host,
            upstream.idle_timeout_ms / 1000,
            max_response_bytes=upstream.max_response_bytes,
            max_header_bytes=upstream.max_header_bytes,
            max_headers=upstream.max_headers,
            keepalive=upstream.tcp_keepalive_secs > 0,
            keepalive_idle_s=upstream.tcp_keepalive_secs or 60,
            keepalive_interval_s=upstream.tcp_keepalive_interval_secs,
            keepalive_count=upstream.tcp_keepalive_retries,
            max_idle_per_host=upstream.pool_max_idle_per_host or 0,
            egress=EgressPolicy.build(upstream.allowed_hosts, upstream.denied_cidrs)
            if upstream.denied_cidrs
            else None,
        )
        return cls(upstream.connect_timeout_ms, client=client)

    @property
    def upstream(self) -> AsyncTransport:
        """The client as the `AsyncTransport` boundary."""
        return self._client

    async def start(self) -> None:
        if isinstance(self._client, H1Transport):
            self._client.start()

    async def close(self) -> None:
        if isinstance(self._client, H1Transport):
            await self._client.close()

    async def send_json(
        self, request: UpstreamRequest, timeout_ms: int, parse_error: FaultParser | None = None
    ) -> tuple[dict[str, Any], int]:
        """A non-streaming call under the total deadline `timeout_ms` (0: none): the parsed
        JSON object and the status; a non-2xx answer is raised as its `GatewayError`."""
        try:
            response = await self._client.send(
                request, stream=False, timeout=timeout_ms / 1000 if timeout_ms else None
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
    async def stream(
        self,
        request: UpstreamRequest,
        stream_timeout_ms: int,
        parse_error: FaultParser | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """A streaming call, entered once the upstream answered 2xx headers; every read is
        bounded by `stream_timeout_ms` (0: none). The response is closed on the way out."""
        timeout = stream_timeout_ms / 1000 if stream_timeout_ms else None
        try:
            response = await self._client.send(request, stream=True, timeout=timeout)
        except TransportError as exc:
            raise gateway_error(exc) from None
        try:
            if response.status >= 300:
                error_body = await _error_body(response, timeout)
                raise _status_error(response, error_body, parse_error)
            yield response
        finally:
            response.close()


async def _error_body(response: UpstreamResponse, timeout: float | None) -> bytes:
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


def _status_error(
    response: UpstreamResponse, raw: bytes, parse: FaultParser | None
) -> GatewayError:
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return upstream_status_error(response.status, raw, retry_after, parse)
