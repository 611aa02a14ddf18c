"""Server-sent-events relay for OpenAI-family streams (contract §6.8).

`SSEDecoder` splits upstream bytes into `data:` payloads. `relay` reads the upstream until
the first chunk, and only then sends the 200 head, so any earlier failure is still an
ordinary error that may fail over. After the head it relays chunk by chunk (several events of
one read go out in one write), rewriting `model` to the caller's alias, dropping the forced
usage chunk unless the client asked for it, and ending with `[DONE]`. A failure after the head
becomes one final `data: {"error": ...}` event; the stream closes without `[DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from aisix.asgi import Headers, Send
from aisix.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamDecodeError,
    UpstreamError,
)
from aisix.events import Usage
from aisix.providers.base import usage_from_openai
from aisix.providers.h1 import HTTPClientError, Response
from aisix.providers.transport import timeout_error
from aisix.proxy.anthropic_in import MessagesStream

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class SSEDecoder:
    """Incremental SSE parser yielding the joined `data:` payload of each event."""

    __slots__ = ("_buf", "_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._cr = False  # the previous read ended with CR: a leading LF completes that CRLF

    def feed(self, data: bytes) -> list[bytes]:
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + data if self._buf else data
        payloads: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            event = buf[start:end]
            start = end + 2
            if event.startswith(b"data:") and b"\n" not in event:
                payloads.append(event[5:].lstrip(b" "))
                continue
            lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
            if lines:
                payloads.append(b"\n".join(lines))
        self._buf = buf[start:]
        return payloads

    def flush(self) -> list[bytes]:
        """Payload of a final event the upstream did not terminate with a blank line."""
        rest, self._buf = self._buf, b""
        self._cr = False
        return self.feed(rest + b"\n\n") if rest.strip() else []


@dataclass(slots=True)
class StreamState:
    """What a relay observed; the pipeline settles limits and usage from it."""

    alias: str
    client_wants_usage: bool
    usage: Usage | None = None
    generated_chars: int = 0
    head_sent: bool = False
    saw_done: bool = False
    #: the terminal message is being sent; a disconnect from here on is the normal end
    finished: bool = False
    error: GatewayError | None = None
    first_chunk_at: float | None = None
    last_send: float = field(default_factory=time.monotonic)
    #: Anthropic `/v1/messages` streams: chunks become Anthropic events (None: chat chunks)
    encoder: MessagesStream | None = None

    def terminal(self) -> bytes:
        """The end of a stream that ended well: `[DONE]`, or `message_delta` + `message_stop`."""
        return DONE if self.encoder is None else self.encoder.finish()

    def error_event(self, err: GatewayError) -> bytes:
        """The final event of a stream that failed after its head."""
        if self.encoder is not None:
            return self.encoder.error(err)
        return (
            b"data: "
            + orjson.dumps({"error": {"message": err.message, "type": err.type}})
            + b"\n\n"
        )


def _rewrite(payload: bytes, state: StreamState) -> bytes | None:
    """One upstream data payload → the bytes to send (None: send nothing)."""
    try:
        chunk: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamDecodeError("upstream sent a stream event that is not valid JSON") from None
    if not isinstance(chunk, dict):
        raise UpstreamDecodeError("upstream sent a stream event that is not an object")
    if "error" in chunk and "choices" not in chunk:
        err = chunk["error"]
        message = err.get("message") if isinstance(err, dict) else None
        raise UpstreamError(message if isinstance(message, str) else "upstream stream error")
    chunk["model"] = state.alias
    choices = chunk.get("choices")
    usage = chunk.get("usage")
    if usage is not None:
        parsed = usage_from_openai(usage)
        if parsed is not None:
            state.usage = parsed
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str):
                    state.generated_chars += len(text.encode())
    if state.encoder is not None:
        return state.encoder.chunk(chunk)
    if not state.client_wants_usage:
        if not choices and usage is not None:
            return None
        if "usage" in chunk and usage is None:
            del chunk["usage"]
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def read_first(
    response: Response, decoder: SSEDecoder, state: StreamState, timeout_ms: int
) -> list[bytes]:
    """Read until at least one chunk is ready to send; raise GatewayError before that."""
    out: list[bytes] = []
    while not out:
        data = await _read(response, timeout_ms)
        payloads = decoder.feed(data) if data else decoder.flush()
        for payload in payloads:
            if payload == b"[DONE]":
                state.saw_done = True
                return out
            rewritten = _rewrite(payload, state)
            if rewritten is not None:
                out.append(rewritten)
        if not data:
            if not out:
                raise UpstreamDecodeError("upstream ended the stream without any event")
            break
    return out


async def relay_rest(
    response: Response,
    decoder: SSEDecoder,
    state: StreamState,
    send: Send,
    timeout_ms: int,
) -> None:
    """After the head: relay until `[DONE]` or EOF; on failure send the error event."""
    try:
        while not state.saw_done:
            data = await _read(response, timeout_ms)
            payloads = decoder.feed(data) if data else decoder.flush()
            out: list[bytes] = []
            for payload in payloads:
                if payload == b"[DONE]":
                    state.saw_done = True
                    break
                rewritten = _rewrite(payload, state)
                if rewritten is not None:
                    out.append(rewritten)
            if out:
                await send_chunk(send, state, b"".join(out))
            if not data:
                break
    except GatewayError as err:
        state.error = err
        state.finished = True
        # the error event is the final body message: it ends the response (no `[DONE]`)
        await send({"type": "http.response.body", "body": state.error_event(err)})
        return
    state.finished = True
    await send({"type": "http.response.body", "body": state.terminal()})


async def send_chunk(send: Send, state: StreamState, body: bytes) -> None:
    state.last_send = time.monotonic()
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _read(response: Response, timeout_ms: int) -> bytes:
    try:
        return await response.read_chunk(timeout_ms / 1000 if timeout_ms else None)
    except TimeoutError:
        raise timeout_error(timeout_ms) from None
    except HTTPClientError:
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
