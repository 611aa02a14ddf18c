"""Upstream I/O for the pipeline, and the mapping of transport faults to errors.

`Transport` owns the upstream HTTP client (`aisix.providers.h1`: keep-alive pools) for the
app's lifetime. `call_json` performs a non-streaming call under the model's total deadline;
`open_stream` returns once the upstream has answered 2xx headers, with per-read deadlines so
the head, the first chunk and every gap between chunks are bounded by `stream_timeout`. Every
failure becomes the `GatewayError` the contract names, never a raw client exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from aisix.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamDecodeError,
    UpstreamFault,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.providers.base import PreparedRequest, UpstreamTarget
from aisix.providers.h1 import H1Client, HTTPClientError, Response

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
        self, connect_timeout_ms: int, pool_size_per_host: int = 0, idle_timeout_ms: int = 30_000
    ) -> None:
        self._client = H1Client(
            connect_timeout_ms / 1000, pool_size_per_host, idle_timeout_ms / 1000
        )

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
        except TimeoutError:
            raise timeout_error(timeout_ms) from None
        except HTTPClientError as exc:
            raise UpstreamConnectionError(str(exc)) from None
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
        except TimeoutError:
            raise timeout_error(stream_timeout_ms) from None
        except HTTPClientError as exc:
            raise UpstreamConnectionError(str(exc)) from None
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
    except (TimeoutError, HTTPClientError):
        pass
    return b"".join(parts)


def _status_error(response: Response, raw: bytes, parse: FaultParser | None) -> GatewayError:
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return upstream_status_error(response.status, raw, retry_after, parse)
