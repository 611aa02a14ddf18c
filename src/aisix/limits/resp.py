"""A small pipelined Redis client (RESP2) for the counter scripts.

Owns the connection from this process to the Redis master: found from `ratelimit.redis.url`
(`redis://`, `rediss://` for TLS, `unix://`) or asked of the sentinels (`SENTINEL
get-master-addr-by-name`, then `ROLE` must say master); `AUTH` and `SELECT` on connect; TLS
with the configured CA, client certificate and verification. Commands from every request share
one connection and are pipelined: each call is one write, replies are matched first in, first
out by the protocol's `data_received`. `evalsha` falls back to `EVAL` (which also caches the
script) when the server does not know the script.

Every call is bounded by `socket_timeout_ms`; a timeout or a lost connection fails every
command in flight on that connection with `RedisUnavailable` and the next call reconnects.
An error reply is a `ReplyError`. This replaces redis-py on the hot path: its pool checkout,
command machinery and pure-Python parser cost ~0.2 ms of CPU per call (docs/decisions.md §11).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from aisix.settings import RedisConn

Reply = Any  # int | bytes | None | list[Reply] | ReplyError (inside arrays)


class RedisUnavailable(Exception):
    """No answer: cannot connect, connection lost, or the call timed out."""


class ReplyError(Exception):
    """Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def encode_command(args: Sequence[Any]) -> bytes:
    """RESP array of bulk strings; str, bytes, int and float arguments."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Reply, int]:
    """One reply starting at `pos`: (value, next position); raises _Incomplete if cut short."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    line = buf[pos + 1 : end]
    pos = end + 2
    if kind == 58:  # ':' integer
        return int(line), pos
    if kind == 36:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _INCOMPLETE
        return bytes(buf[pos : pos + size]), pos + size + 2
    if kind == 42:  # '*' array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = parse_reply(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # '+' simple string
        return bytes(line), pos
    if kind == 45:  # '-' error
        return ReplyError(bytes(line).decode("utf-8", "replace")), pos
    raise ValueError(f"not a RESP reply (type byte {kind!r})")


class _Protocol(asyncio.Protocol):
    """One connection: writes commands, resolves their futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[Reply]] = deque()
        self.buffer = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        pending = self.pending
        try:
            while pos < len(buf) and pending:
                value, pos = parse_reply(buf, pos)
                waiter = pending.popleft()
                if not waiter.done():
                    if isinstance(value, ReplyError):
                        waiter.set_exception(value)
                    else:
                        waiter.set_result(value)
        except _Incomplete:
            pass
        except ValueError as exc:
            self.fail(RedisUnavailable(f"malformed reply from Redis ({exc})"))
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.fail(RedisUnavailable("the connection to Redis was lost"))

    def send(self, payload: bytes) -> asyncio.Future[Reply]:
        waiter = self.loop.create_future()
        self.pending.append(waiter)
        assert self.transport is not None
        self.transport.write(payload)
        return waiter

    def fail(self, error: Exception) -> None:
        self.lost = True
        pending, self.pending = self.pending, deque()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class Script:
    """A Lua script known by its SHA-1."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisClient:
    """See the module docstring."""

    def __init__(self, conn: RedisConn) -> None:
        self.conn = conn
        self.timeout = conn.socket_timeout_ms / 1000
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._tls = _tls_context(conn) if conn.tls is not None else None
        self._target = _parse_url(conn.url) if conn.mode == "single" else None
        self._sentinels = [_host_port(a) for a in conn.sentinels or ()]
        if self._target is not None and self._target[0] == "rediss" and self._tls is None:
            self._tls = ssl.create_default_context()

    # -- commands ---------------------------------------------------------------------------

    async def execute(self, *args: Any) -> Reply:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connected()
        return await self._await(protocol, protocol.send(encode_command(args)))

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Reply:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RedisUnavailable("the Redis client is closed"))

    async def _await(self, protocol: _Protocol, waiter: asyncio.Future[Reply]) -> Reply:
        timer = protocol.loop.call_later(self.timeout, _expire, protocol, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    # -- connecting ---------------------------------------------------------------------------

    async def _connected(self) -> _Protocol:
        """The live connection, made once for all callers waiting on it."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return protocol

    async def _connect(self) -> _Protocol:
        # each sentinel asked may take a timeout, then the master's connect and setup one more
        attempts = len(self.conn.sentinels or ()) + 1 if self.conn.mode == "sentinel" else 2
        try:
            async with asyncio.timeout(self.timeout * attempts):
                if self.conn.mode == "sentinel":
                    protocol = await self._connect_via_sentinels()
                else:
                    assert self._target is not None
                    protocol = await self._open(self._target)
        except TimeoutError:
            raise RedisUnavailable("connecting to Redis timed out") from None
        except OSError as exc:
            raise RedisUnavailable(f"cannot connect to Redis ({exc})") from None
        self._protocol = protocol
        return protocol

    async def _open(self, target: tuple[str, str, int, str | None, str | None, int]) -> _Protocol:
        scheme, host, port, username, password, database = target
        loop = asyncio.get_running_loop()
        protocol: _Protocol
        if scheme == "unix":
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), host)
        else:
            tls = self._tls if scheme == "rediss" or self.conn.tls is not None else None
            _, protocol = await loop.create_connection(
                lambda: _Protocol(loop), host, port, ssl=tls, server_hostname=host if tls else None
            )
        setup: list[asyncio.Future[Reply]] = []
        username = self.conn.username or username
        password = self.conn.password or password
        if password:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            setup.append(protocol.send(encode_command(auth)))
        database = self.conn.database if self.conn.database is not None else database
        if database:
            setup.append(protocol.send(encode_command(("SELECT", database))))
        try:
            for waiter in setup:
                await waiter
        except ReplyError as exc:
            protocol.fail(RedisUnavailable(str(exc)))
            raise OSError(f"Redis refused the connection setup: {exc}") from None
        return protocol

    async def _connect_via_sentinels(self) -> _Protocol:
        assert self.conn.sentinels is not None and self.conn.master_name is not None
        problems: list[str] = []
        for host, port in self._sentinels:
            address = f"{host}:{port}"
            try:
                reply = await asyncio.wait_for(
                    _ask_sentinel(host, port, self.conn.master_name), self.timeout
                )
            except (OSError, ReplyError, RedisUnavailable, TimeoutError) as exc:
                problems.append(f"{address}: {exc or type(exc).__name__}")
                continue
            if not reply:
                problems.append(f"{address}: no master named {self.conn.master_name!r}")
                continue
            master_host, master_port = reply[0].decode(), int(reply[1])
            scheme = "rediss" if self.conn.tls is not None else "redis"
            protocol = await self._open((scheme, master_host, master_port, None, None, 0))
            role = await protocol.send(encode_command(("ROLE",)))
            if isinstance(role, list) and role and role[0] == b"master":
                return protocol
            protocol.fail(RedisUnavailable("not the master"))
            problems.append(f"{address}: {master_host}:{master_port} is not a master")
        raise OSError("no sentinel named a reachable master: " + "; ".join(problems))


async def _ask_sentinel(host: str, port: int, master_name: str) -> Reply:
    loop = asyncio.get_running_loop()
    _, sentinel = await loop.create_connection(lambda: _Protocol(loop), host, port)
    try:
        return await sentinel.send(
            encode_command(("SENTINEL", "get-master-addr-by-name", master_name))
        )
    finally:
        sentinel.fail(RedisUnavailable("sentinel query done"))


def _expire(protocol: _Protocol, waiter: asyncio.Future[Reply]) -> None:
    """A call outlived the socket timeout: the connection is dropped with everything on it."""
    if not waiter.done():
        protocol.fail(RedisUnavailable("Redis did not answer in time"))


def _parse_url(url: str | None) -> tuple[str, str, int, str | None, str | None, int]:
    """(scheme, host or socket path, port, username, password, database) of a Redis URL."""
    if not url:
        raise ValueError("ratelimit.redis.url: required with mode single")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme == "unix":
        return scheme, parts.path, 0, username, password, 0
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"ratelimit.redis.url: database {path!r} is not a number")
    return (
        scheme,
        parts.hostname or "localhost",
        parts.port or 6379,
        username,
        password,
        int(path or 0),
    )


def _host_port(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) of a sentinel, as the settings validated it."""
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]"), int(port)


def _tls_context(conn: RedisConn) -> ssl.SSLContext:
    tls = conn.tls
    assert tls is not None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.client_cert_file:
        context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
