"""Listener limits: the HTTP/1.1 protocol every listener (proxy, admin, status) runs.

`GuardedProtocol` is uvicorn's httptools protocol with the limits a server exposed to
untrusted clients needs: a connection cap per listener (503 and close at accept), a
header-read deadline (from connect, or a request's first byte, until its head is complete), a
body-read deadline, caps on head bytes and header count (431), and a write deadline with a
bounded write buffer (a client that stops reading is aborted, which the request sees as a
disconnect). Server-level errors (parse errors, unknown methods, these limits) answer in the
listener's own error envelope through its `Render`. One `Guard` per listener checks deadlines
on a coarse timer, so a request only stores a timestamp (no timer per request).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from aisix.asgi import JSON_HEADERS, Headers
from aisix.settings import ListenerSettings

log = logging.getLogger("aisix.listener")

#: file descriptors kept out of the automatic proxy cap (stores, logs, pipes, upstream DNS)
FD_RESERVE = 128
#: the guard's timer never runs more often than this (seconds)
MIN_TICK_S = 0.05
#: a refusal log line at most this often per listener (seconds)
LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer the server gives on its own, before or instead of the application."""

    status: int
    message: str
    #: machine-readable reason (the envelope's `code`)
    code: str
    #: the request path when the request line was read, for the envelope choice
    path: str | None = None


#: a listener's envelope for refusals: (body, headers without content-length)
Render = Callable[[Refusal], tuple[bytes, Headers]]


def render_error_msg(refusal: Refusal) -> tuple[bytes, Headers]:
    """The admin and status listeners' envelope, `{"error_msg": ...}`."""
    return orjson.dumps({"error_msg": refusal.message}), JSON_HEADERS


def auto_proxy_cap(caps_other: int) -> int:
    """The proxy's connection cap when `listener.max_connections.proxy` is 0: half of what the
    open-file limit leaves after the other listeners' caps and a reserve, so the other half
    stays free for upstream connections and the admin listener stays reachable."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, (soft - caps_other - FD_RESERVE) // 2)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is on the protocol."""


class Guard:
    """One listener's limits, its envelope, and the timer that enforces its deadlines."""

    def __init__(
        self, name: str, limits: ListenerSettings, max_connections: int, render: Render
    ) -> None:
        self.name = name
        self.max_connections = max_connections
        self.render = render
        self.header_timeout = limits.header_read_timeout_secs
        self.body_timeout = limits.body_read_timeout_secs
        self.write_timeout = limits.write_timeout_secs
        self.write_buffer = limits.write_buffer_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        timeouts = [t for t in (self.header_timeout, self.body_timeout, self.write_timeout) if t]
        self.tick_s = max(MIN_TICK_S, min([1.0, *(t / 4 for t in timeouts)]))
        self.connections: set[Any] = set()
        self.refused = 0
        self._logged_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def protocol_class(self) -> type[GuardedProtocol]:
        """A protocol class bound to this guard (uvicorn builds one instance per connection)."""
        return type(f"{self.name.title()}Protocol", (GuardedProtocol,), {"guard": self})

    def start(self, connections: set[Any]) -> None:
        """Watch `connections` (the uvicorn server's set) until `stop`."""
        self.connections = connections
        self._timer = asyncio.get_running_loop().call_later(self.tick_s, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.tick_s, self._tick)  # first: a failure cannot stop it
        now = loop.time()
        for conn in list(self.connections):
            if isinstance(conn, GuardedProtocol):
                try:
                    conn.check_deadlines(now)
                except Exception:
                    log.exception("%s listener: enforcing a deadline failed", self.name)

    def note_refusal(self, refusal: Refusal) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "%s listener: %s (%d refusals so far)", self.name, refusal.message, self.refused
            )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the listener's limits (see the module docstring)."""

    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: read deadline (loop time) of the head or body being received; 0 = none
        self.read_deadline = 0.0
        #: when a blocked response write gives up (loop time); 0 = not blocked
        self.write_deadline = 0.0
        #: bytes and headers of the head being received
        self.in_head = True
        self.head_bytes = 0
        self.head_size = 0
        self.header_count = 0
        self.refusal: Refusal | None = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(self.connections) >= guard.max_connections:
            self.transport = transport
            self.refusal = Refusal(
                503, f"too many connections (limit {guard.max_connections})", "too_many_connections"
            )
            self._write_refusal(self.refusal, b"retry-after: 1\r\n")
            return
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=guard.write_buffer)
        if guard.header_timeout:
            self.read_deadline = self.loop.time() + guard.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.read_deadline = self.write_deadline = 0.0
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return
        self._unset_keepalive_if_required()
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no listener speaks WebSocket (`ws="none"`): served as plain HTTP
        except httptools.HttpParserError as exc:
            self._parse_failed(exc, data)
            return
        if self.in_head and self.head_bytes > self.guard.max_header_bytes:
            self._refuse(self._too_large())

    def _parse_failed(self, exc: Exception, data: bytes) -> None:
        if self.refusal is not None:  # raised by one of our callbacks
            refusal = self.refusal
            self.refusal = None
            self._refuse(refusal)
            return
        parts = data.split(b"\r\n", 1)[0].split(b" ")
        path = _target_path(parts[1]) if len(parts) >= 2 and parts[1] else None
        well_formed = len(parts) == 3 and parts[2].startswith(b"HTTP/")
        if isinstance(exc, httptools.HttpParserInvalidMethodError) and well_formed:
            method = parts[0][:32].decode("latin-1")
            self._refuse(Refusal(405, f"method {method!r} is not supported", "unknown_route", path))
            return
        reason = str(exc) or type(exc).__name__
        self._refuse(Refusal(400, f"malformed HTTP request: {reason}", "bad_request", path))

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        timeout = self.guard.header_timeout
        if timeout and not self.read_deadline:
            self.read_deadline = self.loop.time() + timeout

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.head_size += len(name) + len(value) + 4
        if self.header_count > self.guard.max_headers:
            self.refusal = Refusal(
                431,
                f"too many request headers (limit {self.guard.max_headers})",
                "request_header_fields_too_large",
                self._path(),
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        guard = self.guard
        if self.head_size > guard.max_header_bytes:
            self.refusal = self._too_large()
            raise _Refused
        self.in_head = False
        self.head_bytes = self.head_size = self.header_count = 0
        self.read_deadline = self.loop.time() + guard.body_timeout if guard.body_timeout else 0.0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.read_deadline = 0.0
        self.in_head = True

    # -- writing ------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.guard.write_timeout:
            self.write_deadline = self.loop.time() + self.guard.write_timeout

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_deadline = 0.0

    # -- deadlines ----------------------------------------------------------------------------

    def check_deadlines(self, now: float) -> None:
        """Called by the guard's timer: enforce a passed read or write deadline."""
        if self.write_deadline and now >= self.write_deadline:
            self.write_deadline = 0.0
            guard = self.guard
            log.info("%s listener: client read nothing for %gs", guard.name, guard.write_timeout)
            self.transport.abort()  # drops the buffered bytes; the request sees a disconnect
        elif self.read_deadline and now >= self.read_deadline:
            if self.flow is not None and self.flow.read_paused:
                # the server stopped reading (a pipelined request waits, or the application
                # has not taken the body yet): not the client's delay; the clock restarts
                guard = self.guard
                timeout = guard.header_timeout if self.in_head else guard.body_timeout
                self.read_deadline = now + timeout
                return
            self.read_deadline = 0.0
            self._read_timed_out()

    def _read_timed_out(self) -> None:
        guard = self.guard
        what = "head" if self.in_head else "body"
        timeout = guard.header_timeout if self.in_head else guard.body_timeout
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self.in_head or cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the application stops waiting for the body
            cycle.message_event.set()
        message = f"request {what} not received within {timeout:g}s"
        self._refuse(Refusal(408, message, "request_timeout", self._path()))

    # -- refusals -----------------------------------------------------------------------------

    def _path(self) -> str | None:
        url = getattr(self, "url", b"")
        return _target_path(url) if url else None

    def _too_large(self) -> Refusal:
        limit = self.guard.max_header_bytes
        message = f"request head exceeds {limit}-byte limit"
        return Refusal(431, message, "request_header_fields_too_large", self._path())

    def _refuse(self, refusal: Refusal) -> None:
        """Answer `refusal` (unless a response is under way) and close the connection."""
        self.refusal = refusal
        self.read_deadline = 0.0
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()
            return
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self._write_refusal(refusal, b"")

    def _write_refusal(self, refusal: Refusal, extra: bytes) -> None:
        self.guard.note_refusal(refusal)
        body, headers = self.guard.render(refusal)
        head = [STATUS_LINE[refusal.status]]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-length: %d\r\nconnection: close\r\n%s\r\n" % (len(body), extra))
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()


def _target_path(target: bytes) -> str | None:
    try:
        return httptools.parse_url(target).path.decode("latin-1")
    except httptools.HttpParserInvalidURLError:
        return None
