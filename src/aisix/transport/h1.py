"""A lean HTTP/1.1 client for upstream calls: keep-alive pools on asyncio protocols + httptools.

Owns the sockets to upstream providers: one pool of keep-alive connections per origin
(scheme, host, port, TLS setting, egress proxy), one request at a time per connection, FIFO
hand-off of freed connections to waiting callers, responses parsed by httptools (llhttp, the
parser uvicorn uses), caps on heads and buffered bodies, deadlines, back-pressure on streamed
bodies, TCP keepalive, expiry of idle connections, and egress proxies (CONNECT tunnels for
https, absolute-form requests for http). `H1Transport.send` is the `AsyncTransport` method;
`post` is the older call shape the legacy `Transport` still uses.

It replaces aiohttp's `ClientSession` on the hot path (docs/decisions.md §10): a call is one
write of pre-joined bytes and a parser fed by the protocol's `data_received`. Every failure is
a `aisix.transport.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from aisix.egress import EgressPolicy
from aisix.providers.base import StreamedBody, TLSConfig, UpstreamRequest
from aisix.transport.connection import DRAIN_BYTES, DRAIN_SECONDS, HIGH_WATER, Response
from aisix.transport.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    WriteError,
)
from aisix.transport.pool import Pool
from aisix.transport.proxy import parse_proxy
from aisix.transport.tls import context_for

_MAX_ROUTES = 4096
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

__all__ = [
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "HIGH_WATER",
    "H1Transport",
    "HTTPClientError",
    "ProtocolError",
    "Response",
    "Route",
    "encode_request",
]

#: the names the pipeline's relay still imports (kept until it moves to `TransportError`)
HTTPClientError = TransportError
ProtocolError = RemoteProtocolError

#: what a route's TLS setting may be: a value (shared pools), or a legacy context / bool
TLSSetting = TLSConfig | ssl.SSLContext | bool


class Route:
    """A parsed URL: the pool it uses and the request-line prefix."""

    __slots__ = ("pool", "prefix", "with_length")

    def __init__(self, pool: Pool, method: str, target: bytes, extra: bytes = b"") -> None:
        self.pool = pool
        self.prefix = (
            method.encode() + b" " + target + b" HTTP/1.1\r\nHost: " + pool.host_header + b"\r\n"
        ) + extra
        #: methods with a body always send Content-Length; GET/DELETE only when they carry one
        self.with_length = method in _WITH_BODY


class H1Transport:
    """Pools by origin; see the module docstring. Implements `AsyncTransport`."""

    def __init__(
        self,
        connect_timeout_s: float | None = 5.0,
        limit_per_host: int = 0,
        idle_timeout_s: float = 30.0,
        *,
        max_response_bytes: int = 64 * 1024 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_headers: int = 100,
        keepalive: bool = True,
        keepalive_idle_s: int = 60,
        keepalive_interval_s: int = 30,
        keepalive_count: int = 5,
        max_idle_per_host: int = 0,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.limit_per_host = limit_per_host
        self.idle_timeout_s = idle_timeout_s
        self.max_response_bytes = max_response_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_idle_per_host = max_idle_per_host
        self.egress = egress
        self._keepalive_options = (
            (keepalive_idle_s, keepalive_interval_s, keepalive_count) if keepalive else None
        )
        self._pools: dict[tuple[object, ...], Pool] = {}
        self._routes: dict[tuple[str, str, int, str | None], tuple[TLSSetting, Route]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._sweeper is None and self.idle_timeout_s > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._routes.clear()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.5, self.idle_timeout_s / 4))
            cutoff = loop.time() - self.idle_timeout_s
            for key, pool in list(self._pools.items()):
                pool.expire_idle(cutoff)
                if pool.empty:
                    del self._pools[key]
                    self._routes.clear()  # routes hold their pool

    def keepalive(self, transport: asyncio.BaseTransport) -> None:
        """Turn on TCP keepalive probes on a new upstream socket."""
        options = self._keepalive_options
        sock = transport.get_extra_info("socket")
        if options is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        idle, interval, count = options
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        elif hasattr(socket, "TCP_KEEPALIVE"):  # macOS
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPALIVE, idle)
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)

    def route(
        self, url: str, tls: TLSSetting, method: str = "POST", proxy: str | None = None
    ) -> Route:
        # keyed by the TLS object's identity: hashing a TLSConfig value costs ~1 µs, an id
        # nothing. The entry keeps that object alive, so its id cannot be reused meanwhile;
        # an equal value from a new snapshot misses once and lands on the same pool.
        key = (method, url, id(tls), proxy)
        found = self._routes.get(key)
        if found is not None:
            return found[1]
        route = self._new_route(url, tls, method, proxy)
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = (tls, route)
        return route

    def _new_route(self, url: str, tls: TLSSetting, method: str, proxy: str | None) -> Route:
        if method not in METHODS:
            raise LocalProtocolError(f"unsupported method {method!r}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise LocalProtocolError(f"unsupported upstream URL scheme {scheme!r}")
        default_port = 443 if scheme == "https" else 80
        try:
            port = parts.port or default_port
        except ValueError:
            raise LocalProtocolError("the upstream URL has a bad port") from None
        if isinstance(tls, bool):
            tls = TLSConfig(verify=tls)  # legacy setting: share the pools of equal values
        tls_key = tls if scheme == "https" else None
        egress = parse_proxy(proxy) if proxy else None
        pool_key = (scheme, parts.hostname, port, tls_key, egress)
        pool = self._pools.get(pool_key)
        if pool is None:
            context = None
            if scheme == "https":
                context = tls if isinstance(tls, ssl.SSLContext) else context_for(tls)
            pool = Pool(self, parts.hostname, port, context, default_port, egress)
            self._pools[pool_key] = pool
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        extra = b""
        if egress is not None and scheme == "http":  # absolute form, credentials for the proxy
            target = f"http://{pool.host_header.decode()}{target}"
            extra = egress.auth_line
        try:
            encoded = target.encode("ascii", "strict")
        except UnicodeEncodeError:
            raise LocalProtocolError("the upstream URL is not ASCII") from None
        return Route(pool, method, encoded, extra)

    def send(
        self, request: UpstreamRequest, *, stream: bool, timeout: float | None
    ) -> Coroutine[Any, Any, Response]:
        """Send one request (`AsyncTransport.send`). `timeout`: the whole exchange (not
        streaming) or each read until the head (streaming); None waits for ever. The
        connection attempt is also bounded by the transport's connect timeout."""
        route = self.route(request.url, request.tls, request.method, request.proxy)
        if request.stream_body is not None:
            return self._exchange_streamed(
                route, request.headers, request.stream_body, timeout, stream
            )
        return self._exchange(route, request.headers, request.body, timeout, stream)

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        *,
        tls: TLSSetting,
        proxy: str | None,
        timeout: float | None,
        stream: bool,
    ) -> Coroutine[Any, Any, Response]:
        """`send` from parts; `tls` may also be a legacy SSLContext or bool."""
        return self._exchange(self.route(url, tls, method, proxy), headers, body, timeout, stream)

    def post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        *,
        tls: TLSSetting,
        timeout: float | None,
        stream: bool,
    ) -> Coroutine[Any, Any, Response]:
        """The legacy call shape: a POST with a TLS value, a context or a bool."""
        return self._exchange(self.route(url, tls), headers, body, timeout, stream)

    async def _exchange(
        self,
        route: Route,
        headers: dict[str, str],
        body: bytes,
        timeout: float | None,
        stream: bool,
    ) -> Response:
        data = encode_request(route.prefix, headers, body, route.with_length)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None or stream else loop.time() + timeout
        conn = await route.pool.acquire(self._connect_timeout(timeout), timeout)
        response = Response(conn, stream, timeout)
        try:
            conn.send(response, data)
            # the hot path waits inline: one coroutine less per call than `_answer`
            if stream:
                await response._wait_head(timeout)
            else:
                await response._wait_done(deadline)
        except BaseException:
            response.close()
            raise
        return response

    async def _exchange_streamed(
        self,
        route: Route,
        headers: dict[str, str],
        body: StreamedBody,
        timeout: float | None,
        stream: bool,
    ) -> Response:
        """Send the head, then the body as `body.chunks` yields it (chunked unless its length
        is known), each write waiting until the upstream socket takes it. An upstream that
        answers before the body is all sent gets no more of it; its connection is not reused."""
        head = encode_head(route.prefix, headers, body.length)
        conn = await route.pool.acquire(self._connect_timeout(timeout), timeout)
        response = Response(conn, stream, timeout)
        chunked = body.length is None
        sent = 0
        try:
            conn.send(response, head, more=True)
            async with contextlib.aclosing(body.chunks) as chunks:
                async for chunk in chunks:
                    if response.status:
                        break  # answered early (a 401, a 413): the rest is not wanted
                    if not chunk:
                        continue
                    sent += len(chunk)
                    if body.length is not None and sent > body.length:
                        raise LocalProtocolError("the request body exceeds its Content-Length")
                    try:
                        await conn.write_body(
                            b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk, timeout
                        )
                    except WriteError:
                        if response.status:
                            break
                        raise
                else:
                    if chunked:
                        await conn.write_body(b"0\r\n\r\n", timeout)
                    elif sent != body.length:
                        raise LocalProtocolError(
                            "the request body is shorter than its Content-Length"
                        )
                    conn.end_body()
            deadline = None if timeout is None or stream else conn.loop.time() + timeout
            await _answer(response, stream, timeout, deadline)
        except BaseException:
            response.close()
            raise
        return response

    def _connect_timeout(self, timeout: float | None) -> float | None:
        """The connection attempt's bound: the connect timeout, or the call's if shorter."""
        connect_timeout = self.connect_timeout_s
        if timeout is not None and (connect_timeout is None or timeout < connect_timeout):
            return timeout
        return connect_timeout


async def _answer(
    response: Response, stream: bool, timeout: float | None, deadline: float | None
) -> None:
    """Wait for the head (streamed) or the whole answer (within the loop-time `deadline`)."""
    if stream:
        await response._wait_head(timeout)
    else:
        await response._wait_done(deadline)


def _head_lines(prefix: bytes, headers: dict[str, str]) -> list[bytes]:
    """Request line and Host (`prefix`), then the headers, each checked for line breaks."""
    lines = [prefix]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise LocalProtocolError(f"header {name!r} contains a line break")
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise LocalProtocolError(f"header {name!r} is not latin-1 text") from None
    return lines


def encode_request(
    prefix: bytes, headers: dict[str, str], body: bytes, with_length: bool = True
) -> bytes:
    """The request bytes: request line and Host (`prefix`), headers, Content-Length, body."""
    lines = _head_lines(prefix, headers)
    if with_length or body:
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    else:
        lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def encode_head(prefix: bytes, headers: dict[str, str], length: int | None) -> bytes:
    """The head of a request whose body follows: Content-Length if known, else chunked."""
    lines = _head_lines(prefix, headers)
    if length is None:
        lines.append(b"Transfer-Encoding: chunked\r\n\r\n")
    else:
        lines.append(b"Content-Length: %d\r\n\r\n" % length)
    return b"".join(lines)
