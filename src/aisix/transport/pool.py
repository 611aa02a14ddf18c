"""Keep-alive connections to one origin, handed out in arrival order.

A `Pool` keeps the idle connections of one (scheme, host, port, TLS setting, egress proxy),
opens new ones (TCP keepalive on; through an egress proxy: a plain connection for http, a
CONNECT tunnel then TLS inside it for https) and, at `limit`, queues callers FIFO: a released
connection or the slot of a closed one goes to the longest waiter, never to a later arrival.
Waiting too long is a `PoolTimeout`, connecting too long a `ConnectTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING

from aisix.transport.connection import Connection
from aisix.transport.errors import (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    TransportError,
)
from aisix.transport.proxy import ProxyURL

if TYPE_CHECKING:
    from aisix.transport.h1 import H1Transport


class _Tunnel(asyncio.Protocol):
    """Reads an egress proxy's answer to CONNECT: the status once the head is complete."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.status: asyncio.Future[int] = loop.create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            return
        self._buffer += data
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self._buffer) > 64 * 1024:
                self.status.set_exception(ConnectError("the egress proxy sent a malformed answer"))
            return
        parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self.status.set_exception(ConnectError("the egress proxy sent a malformed answer"))
            return
        status = int(parts[1])
        if rest and 200 <= status < 300:  # bytes before our TLS hello: not a clean tunnel
            self.status.set_exception(ConnectError("the egress proxy sent a malformed answer"))
            return
        self.status.set_result(status)  # a refusal's body (squid sends HTML) is not read

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectError("the egress proxy closed the connection"))


class Pool:
    """Keep-alive connections to one origin, optionally at most `limit` of them at once.

    At the limit, callers queue; a released connection (or the slot of a closed one) goes to
    the longest waiter, never to a caller that arrived later."""

    def __init__(
        self,
        client: H1Transport,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        default_port: int,
        proxy: ProxyURL | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.proxy = proxy
        self.limit = client.limit_per_host
        #: resolved addresses are checked against it on connect (None: no policy)
        self.egress = client.egress
        #: idle connections kept at most (0: no cap); one more released is closed
        self.max_idle = client.max_idle_per_host
        self.max_response_bytes = client.max_response_bytes
        self.max_header_bytes = client.max_header_bytes
        self.max_headers = client.max_headers
        self._keepalive = client.keepalive
        literal = f"[{host}]" if ":" in host else host
        self.host_header = (literal if port == default_port else f"{literal}:{port}").encode()
        self.idle: list[Connection] = []
        self.open = 0  # connections counted against `limit`: idle, busy and connecting
        self._members: set[Connection] = set()
        #: FIFO of callers waiting at the limit; each gets a connection or, as None, a slot
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()

    async def acquire(
        self, connect_timeout: float | None, wait_timeout: float | None
    ) -> Connection:
        """An idle connection, or a new one; at the limit, wait in line (up to
        `wait_timeout`, then PoolTimeout) for a released connection or a free slot."""
        idle = self.idle
        while True:
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn
            if not self.limit or (self.open < self.limit and not self._waiters):
                self.open += 1
                break
            handed = await self._queue(wait_timeout)
            if handed is None:
                break  # a slot: `open` already counts this caller
            if not handed.closed:
                return handed
            # closed between hand-off and wake-up: its slot went to the next in line
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self._pass_slot()
            raise

    async def _queue(self, timeout: float | None) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as this caller gave up: pass it on
                if handed is None:
                    self._pass_slot()
                else:
                    self.release(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError) and not isinstance(exc, TransportError):
                raise PoolTimeout("no pooled connection became free", timeout) from None
            raise

    async def _connect(self, timeout: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if self.proxy is not None:
                    conn = await self._connect_via_proxy(loop, self.proxy)
                else:
                    target = await self._resolve(loop) if self.egress is not None else self.host
                    transport, conn = await loop.create_connection(
                        lambda: Connection(self, loop),
                        target,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.host if self.tls is not None else None,
                    )
                    self._keepalive(transport)
        except TimeoutError:
            raise ConnectTimeout("could not connect to the upstream in time", timeout) from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with the upstream failed ({exc.reason})") from None
        except OSError:
            raise ConnectError("could not connect to the upstream") from None
        self._members.add(conn)
        return conn

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> str:
        """The first resolved address the egress policy allows (`upstream.denied_cidrs`,
        checked again here: a name may resolve into a metadata network); ConnectError if none."""
        assert self.egress is not None
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        reason = "the upstream name did not resolve"
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            refused = self.egress.check_resolved(address)
            if refused is None:
                return address
            reason = refused
        raise ConnectError(reason)

    async def _connect_via_proxy(
        self, loop: asyncio.AbstractEventLoop, proxy: ProxyURL
    ) -> Connection:
        """http: a plain connection to the proxy (requests go in absolute form); https: a
        CONNECT tunnel through it, then TLS with the upstream inside the tunnel."""
        if self.tls is None:
            try:
                raw, conn = await loop.create_connection(
                    lambda: Connection(self, loop), proxy.host, proxy.port
                )
            except OSError:
                raise ConnectError("could not connect to the egress proxy") from None
            self._keepalive(raw)
            return conn
        try:
            raw, tunnel = await loop.create_connection(
                lambda: _Tunnel(loop), proxy.host, proxy.port
            )
        except OSError:
            raise ConnectError("could not connect to the egress proxy") from None
        try:
            self._keepalive(raw)
            literal = f"[{self.host}]" if ":" in self.host else self.host
            authority = f"{literal}:{self.port}".encode()
            raw.write(
                b"CONNECT "
                + authority
                + b" HTTP/1.1\r\nHost: "
                + authority
                + b"\r\n"
                + proxy.auth_line
                + b"\r\n"
            )
            status = await tunnel.status
            if not 200 <= status < 300:
                raise ConnectError(f"the egress proxy refused the tunnel ({status})")
            conn = Connection(self, loop)
            secured = await loop.start_tls(raw, conn, self.tls, server_hostname=self.host)
        except BaseException:
            raw.abort()
            raise
        if secured is None:
            raw.abort()
            raise ConnectError("TLS through the egress proxy could not start")
        conn.connection_made(secured)
        return conn

    def release(self, conn: Connection) -> None:
        conn.idle_since = conn.loop.time()
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self.max_idle and len(self.idle) >= self.max_idle:
            conn.abort()
            return
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        if conn in self._members:
            self._members.discard(conn)
            self._pass_slot()

    def _pass_slot(self) -> None:
        """A connection slot came free: give it to the longest waiter, or count it free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.open -= 1

    def expire_idle(self, older_than: float) -> None:
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.idle_since < older_than:
                conn.abort()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        self.idle = []
        for conn in list(self._members):
            conn.abort()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectError("the upstream client is closed"))

    @property
    def empty(self) -> bool:
        return not self._members and not self._waiters
