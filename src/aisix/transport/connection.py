"""One upstream socket and the response it carries: an asyncio `Protocol` fed to httptools.

`Connection` parses one response at a time (llhttp, the parser uvicorn uses), enforces the
caps on a response head (`max_header_bytes`, `max_headers`), tells a failed write from a
cut answer, and goes back to its pool when a message ends with keep-alive. `Response` holds
status, headers and the body: buffered up to `max_response_bytes` (non-streamed) or handed
out chunk by chunk with back-pressure (streamed), with deadlines as loop timers.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, cast

import httptools

from aisix.transport.errors import (
    ConnectionClosed,
    ReadTimeout,
    RemoteProtocolError,
    ResponseTooLarge,
    TransportError,
    WriteError,
    WriteTimeout,
)

if TYPE_CHECKING:
    from aisix.transport.pool import Pool

#: a streamed body buffered beyond this pauses reading from the upstream socket (a stream
#: whose client stopped reading holds about this plus one socket read until it is cut)
HIGH_WATER = 64 * 1024
#: a released response may take this long, and this many more bytes, to reach its end before
#: its connection is dropped instead of going back to the pool
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 64 * 1024


class Response:
    """One response: status and headers, then the body, buffered or streamed."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_drain",
        "_error",
        "_inflate",
        "_limit",
        "_paused",
        "_size",
        "_stream",
        "_timeout",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, conn: Connection, stream: bool, timeout: float | None) -> None:
        self._conn = conn
        self._stream = stream
        self._timeout = timeout
        #: most bytes a buffered body may have (0: no cap; streams are bounded by back-pressure)
        self._limit = 0 if stream else conn.pool.max_response_bytes
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._inflate: zlib._Decompress | None = None
        self._drain: asyncio.TimerHandle | None = None

    # -- fed by the connection -------------------------------------------------------------

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj(wbits=15)
        elif encoding not in ("identity", ""):
            raise RemoteProtocolError(f"unsupported content-encoding {encoding!r}")
        if self._limit:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self._limit:
                raise ResponseTooLarge(self._limit)
        if self._stream:
            self._wake()

    def _feed(self, data: bytes) -> None:
        if self._drain is not None:
            self._size += len(data)
            if self._size > DRAIN_BYTES:
                self._conn.abort()
            return
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                raise RemoteProtocolError("upstream sent a body that does not decompress") from None
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)
        if self._stream:
            if self._size > HIGH_WATER and not self._paused:
                self._paused = True
                self._conn.pause_reading()
            self._wake()
        elif self._limit and self._size > self._limit:
            raise ResponseTooLarge(self._limit)

    def _finish(self) -> None:
        if self._error is not None:
            return  # already failed (a deadline, or closed by us): stays failed
        if self._drain is not None:
            self._drain.cancel()
            self._done = True
            return
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                self._chunks.append(tail)
                self._size += len(tail)
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._drain is not None:
            self._drain.cancel()
        if self._error is None and not self._done:
            self._error = error
            self._wake()

    def _expire(self) -> None:
        """A deadline passed: fail the waiting read and drop the connection."""
        self._fail(ReadTimeout("upstream request timed out", self._timeout))
        self._conn.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- used by the caller ----------------------------------------------------------------

    async def _wait(self, timeout: float | None) -> None:
        waiter = self._conn.loop.create_future()
        self._waiter = waiter
        if timeout is None:
            await waiter
            return
        timer = self._conn.loop.call_later(timeout, self._expire)
        try:
            await waiter
        finally:
            timer.cancel()

    async def _wait_head(self, timeout: float | None) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)

    async def _wait_done(self, deadline: float | None) -> None:
        """Non-streaming: the whole body, within an absolute loop-time deadline."""
        while not self._done:
            if self._error is not None:
                raise self._error
            timeout = None if deadline is None else deadline - self._conn.loop.time()
            if timeout is not None and timeout <= 0:
                self._expire()
                continue
            await self._wait(timeout)

    def body(self) -> bytes:
        """The buffered body of a complete non-streamed response."""
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_chunk(self, timeout: float | None) -> bytes:
        """The body bytes buffered so far (waiting up to `timeout` for some); b"" at the end."""
        while not self._chunks:
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            self._timeout = timeout
            await self._wait(timeout)
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._paused:
            self._paused = False
            self._conn.resume_reading()
        return data

    @property
    def complete(self) -> bool:
        return self._done

    def release(self) -> None:
        """Done with a response whose payload is complete (an SSE `[DONE]`) though the message
        may not be: discard the rest as it arrives so the connection can be reused, or drop it
        after `DRAIN_SECONDS` / `DRAIN_BYTES`."""
        if self._done or self._drain is not None:
            return
        if self._error is not None or self._conn.closed:
            self.close()
            return
        self._chunks = []
        self._size = 0
        self._drain = self._conn.loop.call_later(DRAIN_SECONDS, self._conn.abort)
        if self._paused:
            self._paused = False
            self._conn.resume_reading()

    def close(self) -> None:
        """Done with this response; an unfinished one takes its connection down with it
        (unless it is draining after `release`)."""
        if not self._done and self._drain is None:
            self._error = self._error or ConnectionClosed("response closed before its end")
            self._conn.abort()


class Connection(asyncio.Protocol):
    """One upstream socket; carries one exchange at a time and goes back to its pool."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._interim = False
        self._until_close = False
        self._aborted = False  # we dropped it: a close-delimited body is then cut, not complete
        self._in_head = False  # a response head is expected or being read
        self._head_bytes = 0  # raw bytes fed while the head was still incomplete
        self._header_bytes = 0  # sum of header names and values
        self._header_count = 0
        self._writing = False  # part of the request is still in our write buffer
        self._body_open = False  # a streamed request body is not all written yet
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        # pause_writing/resume_writing then say when a request is not yet all sent (1, not 0:
        # asyncio's TLS transport pauses at `size >= high`, the plain one at `size > high`)
        self.transport.set_write_buffer_limits(high=1)

    def pause_writing(self) -> None:
        self._writing = True

    def resume_writing(self) -> None:
        self._writing = False
        self._wake_writer(None)

    def _wake_writer(self, error: BaseException | None) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            self._broken(
                cause if isinstance(cause, TransportError) else RemoteProtocolError(str(exc))
            )
            return
        except httptools.HttpParserError as exc:
            self._broken(RemoteProtocolError(f"malformed upstream response ({exc})"))
            return
        if self._in_head:  # a head arriving piecemeal: bound what the parser buffers
            self._head_bytes += len(data)
            if self._head_bytes > self.pool.max_header_bytes:
                self._broken(self._head_too_large())

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._wake_writer(WriteError("the connection failed while sending the request"))
        response = self.response
        if response is None:
            return
        self.response = None
        if response.status and self._until_close and not self._interim and not self._aborted:
            response._finish()  # a body delimited by the upstream closing the connection
        elif not response.status and self._writing:
            response._fail(WriteError("the connection failed while sending the request"))
        else:
            response._fail(ConnectionClosed("the upstream closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        pool = self.pool
        if self._header_count > pool.max_headers or self._header_bytes > pool.max_header_bytes:
            raise self._head_too_large()
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def _head_too_large(self) -> RemoteProtocolError:
        pool = self.pool
        return RemoteProtocolError(
            f"upstream response head exceeds {pool.max_header_bytes} bytes"
            f" or {pool.max_headers} headers"
        )

    def on_headers_complete(self) -> None:
        headers, self._headers = self._headers, {}
        status = self.parser.get_status_code()
        response = self.response
        if response is None:
            raise RemoteProtocolError("the upstream answered without a request")
        self._interim = 100 <= status < 200
        if self._interim:
            return
        self._in_head = False
        self._until_close = (
            "content-length" not in headers
            and "transfer-encoding" not in headers
            and status not in (204, 304)
        )
        response._head(status, headers)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self.response
        self.response = None
        keep_alive = self.parser.should_keep_alive()
        if response is not None:
            response._finish()
        # an answer that came before our whole request was written leaves the stream unusable
        unsent = self._writing or self._body_open
        if keep_alive and not self.closed and self.transport and not unsent:
            self.pool.release(self)
        else:
            self.abort()

    # -- used by the pool and the response -------------------------------------------------

    def send(self, response: Response, data: bytes, *, more: bool = False) -> None:
        """Start an exchange: write the request (`more`: only its head; the body follows
        through `write_body` and `end_body`)."""
        self.response = response
        self._body_open = more
        self._until_close = False
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        assert self.transport is not None
        self.transport.write(data)

    async def write_body(self, data: bytes, timeout: float | None) -> None:
        """Write part of a streamed request body, then wait (up to `timeout`) until the
        socket has taken it: the client's upload goes at the upstream's pace."""
        if self.closed or self.transport is None:
            raise WriteError("the connection failed while sending the request")
        self.transport.write(data)
        if not self._writing:
            return
        waiter = self.loop.create_future()
        self._drain_waiter = waiter
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._write_expired, timeout)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _write_expired(self, timeout: float) -> None:
        self._wake_writer(WriteTimeout("the upstream stopped taking the request body", timeout))
        self.abort()

    def end_body(self) -> None:
        """The streamed request body is all written: the connection may be reused."""
        self._body_open = False

    def _broken(self, error: TransportError) -> None:
        response = self.response
        self.response = None
        if response is not None:
            response._fail(error)
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._aborted = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
