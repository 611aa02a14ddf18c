"""The stream relay (contract §6.8): upstream bytes to the client through a `StreamRelay`.

`read_first` reads the upstream until the relay has client bytes to send, and only then does
the attempt send the 200 head, so any earlier failure is still an ordinary error that may
fail over. `relay_rest` then relays read by read (several events of one read go out in one
write) until the family's terminal marker or EOF, and ends with the relay's terminal bytes.
A failure after the head becomes the relay's final error event; the stream closes without a
terminal marker. What was seen (usage, generated text) stays on the relay for settlement.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aisix import redact
from aisix.asgi import Headers, Send
from aisix.errors import GatewayError, UpstreamConnectionError, UpstreamDecodeError
from aisix.providers.transport import timeout_error
from aisix.transport.base import UpstreamResponse
from aisix.transport.errors import TransportError
from aisix.wire.base import StreamRelay

PING = b": ping\n\n"
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class StreamState:
    """What a streamed attempt observed; the pipeline settles limits and usage from it."""

    relay: StreamRelay
    head_sent: bool = False
    #: the terminal message is being sent; a disconnect from here on is the normal end
    finished: bool = False
    error: GatewayError | None = None
    first_chunk_at: float | None = None
    last_send: float = field(default_factory=time.monotonic)


async def read_first(response: UpstreamResponse, state: StreamState, timeout_ms: int) -> bytes:
    """Read until the relay has bytes for the client (or the stream ended cleanly)."""
    relay = state.relay
    while True:
        data = await _read(response, timeout_ms)
        out = relay.feed(data) if data else relay.end()
        if out or relay.done:
            return out
        if not data:
            raise UpstreamDecodeError("upstream ended the stream without any event")


async def relay_rest(
    response: UpstreamResponse, state: StreamState, send: Send, timeout_ms: int
) -> None:
    """After the head: relay until the terminal marker or EOF; on failure send the error."""
    relay = state.relay
    try:
        while not relay.done:
            data = await _read(response, timeout_ms)
            out = relay.feed(data) if data else relay.end()
            if out:
                await send_chunk(send, state, out)
            if not data:
                break
    except GatewayError as err:
        err.message = redact.current().redact(err.message)  # upstream text: no secret leaves
        state.error = err
        state.finished = True
        # the error event is the final body message: it ends the response (no terminal)
        await send({"type": "http.response.body", "body": relay.error(err)})
        return
    state.finished = True
    await send({"type": "http.response.body", "body": relay.terminal()})


async def send_chunk(send: Send, state: StreamState, body: bytes) -> None:
    state.last_send = time.monotonic()
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _read(response: UpstreamResponse, timeout_ms: int) -> bytes:
    try:
        return await response.read_chunk(timeout_ms / 1000 if timeout_ms else None)
    except TimeoutError:
        raise timeout_error(timeout_ms) from None
    except TransportError:
        raise UpstreamConnectionError("the upstream closed the connection mid-stream") from None


class Keepalive:
    """Sends `: ping` after `interval` seconds without a chunk (0 disables it)."""

    __slots__ = ("_handle", "_interval", "_send", "_state", "_tasks")

    def __init__(self, interval: float, send: Send, state: StreamState) -> None:
        self._interval = interval
        self._send = send
        self._state = state
        self._handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if interval > 0:
            self._arm(interval)

    def _arm(self, delay: float) -> None:
        self._handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        idle = time.monotonic() - self._state.last_send
        if idle >= self._interval:
            self._state.last_send = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._ping())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._arm(self._interval)
        else:
            self._arm(self._interval - idle)

    async def _ping(self) -> None:
        await self._send({"type": "http.response.body", "body": PING, "more_body": True})

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
