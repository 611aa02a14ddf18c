"""Upstream I/O: one pooled aiohttp session, and the mapping of transport faults to errors.

`Transport` owns the `ClientSession` for the app's lifetime (keep-alive pool, cached DNS).
`call_json` performs a non-streaming call under the model's total deadline; `open_stream`
returns once the upstream has answered 2xx headers, with per-read (`sock_read`) deadlines so
the first chunk and every gap between chunks are bounded by `stream_timeout`. Every failure
becomes the `GatewayError` the contract names, never a raw aiohttp exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from aisix.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamDecodeError,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.providers.base import PreparedRequest, UpstreamTarget


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
    def __init__(self, connect_timeout_ms: int, pool_size_per_host: int = 0) -> None:
        self._connect_s = connect_timeout_ms / 1000
        self._pool_size = pool_size_per_host
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[int, bool], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=self._pool_size,
            ttl_dns_cache=300,
            keepalive_timeout=60,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _timeout(self, ms: int, streaming: bool) -> aiohttp.ClientTimeout:
        """One shared ClientTimeout per (deadline, kind): a few distinct values per process.
        Non-streaming: `ms` bounds the whole exchange. Streaming: `ms` bounds each read (the
        first chunk and every gap)."""
        found = self._timeouts.get((ms, streaming))
        if found is None:
            seconds = ms / 1000 if ms else None
            if streaming:
                found = aiohttp.ClientTimeout(sock_connect=self._connect_s, sock_read=seconds)
            else:
                found = aiohttp.ClientTimeout(total=seconds, sock_connect=self._connect_s)
            self._timeouts[(ms, streaming)] = found
        return found

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "transport not started"
        return self._session

    async def call_json(
        self, target: UpstreamTarget, request: PreparedRequest, timeout_ms: int
    ) -> tuple[dict[str, Any], int]:
        """POST and parse a JSON object answer; return (body, status)."""
        timeout = self._timeout(timeout_ms, streaming=False)
        try:
            async with self.session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=timeout,
                ssl=target.ssl,
            ) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise _status_error(response, raw)
                status = response.status
        except GatewayError:
            raise
        except TimeoutError:
            raise timeout_error(timeout_ms) from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(_connection_message(exc)) from None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamDecodeError("upstream returned a body that is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise UpstreamDecodeError("upstream returned JSON that is not an object")
        return parsed, status

    @asynccontextmanager
    async def open_stream(
        self, target: UpstreamTarget, request: PreparedRequest, stream_timeout_ms: int
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a streaming POST; yields the response once 2xx headers have arrived."""
        timeout = self._timeout(stream_timeout_ms, streaming=True)
        try:
            response = await self.session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=timeout,
                ssl=target.ssl,
            )
        except TimeoutError:
            raise timeout_error(stream_timeout_ms) from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectionError(_connection_message(exc)) from None
        try:
            if response.status >= 300:
                try:
                    raw = await response.read()
                except (TimeoutError, aiohttp.ClientError):
                    raw = b""
                raise _status_error(response, raw)
            yield response
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()


def _status_error(response: aiohttp.ClientResponse, raw: bytes) -> GatewayError:
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return upstream_status_error(response.status, raw, retry_after)


def _connection_message(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect to the upstream"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the upstream closed the connection"
    return "upstream transport error"


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await task
