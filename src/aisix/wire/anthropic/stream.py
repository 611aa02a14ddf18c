"""Anthropic stream output: translated events and the same-family relay (contract §6.9).

`MessagesEncoder` turns canonical events into Anthropic SSE in the documented order
(`message_start`; per block `content_block_start` / `_delta` / `_stop`; `message_delta` with
stop reason and usage; `message_stop`); `PassthroughStream` relays an Anthropic upstream's
SSE with only `model` rewritten in `message_start`, observing usage. A failure after the
head is one final `event: error` in the Anthropic envelope.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import GatewayError, UpstreamError
from aisix.wire.anthropic.common import (
    STOP_REASONS,
    UsageTally,
    event,
    load_event,
    message_id,
    stream_error,
    usage_json,
)
from aisix.wire.openai_in import merge_usage
from aisix.wire.sse import SSEDecoder, SSEEvent
from aisix.wire.types import (
    Finish,
    StreamEvent,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageReport,
)

JsonObject = dict[str, Any]


def error_event(err: GatewayError) -> bytes:
    """The final event of a stream that failed after its head."""
    failure = {"type": err.anthropic_type(), "message": err.message}
    return event("error", {"type": "error", "error": failure})


class MessagesEncoder:
    """Canonical events → Anthropic stream events, in the documented order: `message_start`;
    per block `content_block_start`, `content_block_delta`s, `content_block_stop`; then
    `message_delta` (stop reason, usage) and `message_stop`."""

    __slots__ = (
        "_alias",
        "_block",
        "_id",
        "_index",
        "_sequence",
        "_started",
        "_stop",
        "_tools",
        "_usage",
    )

    def __init__(self, alias: str, request_id: str) -> None:
        self._alias = alias
        self._id = message_id(request_id)
        self._started = False
        self._index = -1  # index of the last block opened
        self._block: str | None = None  # "text", "thinking", "tool:<n>" while one is open
        self._tools: dict[int, tuple[str, str]] = {}  # canonical tool index → (id, name)
        self._stop: str | None = None
        self._sequence: str | None = None
        self._usage: Usage | None = None

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            if isinstance(ev, StreamStart):
                if ev.usage is not None:
                    self._usage = merge_usage(self._usage, ev.usage)
                self._start(out)
                continue
            self._start(out)
            if isinstance(ev, TextDelta):
                if ev.text:
                    self._ensure("text", {"type": "text", "text": ""}, out)
                    out.append(self._delta({"type": "text_delta", "text": ev.text}))
            elif isinstance(ev, ThinkingDelta):
                self._thinking(ev, out)
            elif isinstance(ev, ToolCallStart):
                # some OpenAI-compatible servers repeat id and name on every fragment
                if self._block != f"tool:{ev.index}":
                    self._tools[ev.index] = (ev.id, ev.name)
                    self._open_tool(ev.index, out)
            elif isinstance(ev, ToolCallDelta):
                if self._block != f"tool:{ev.index}":
                    self._open_tool(ev.index, out)
                if ev.arguments:
                    out.append(
                        self._delta({"type": "input_json_delta", "partial_json": ev.arguments})
                    )
            elif isinstance(ev, Finish):
                self._stop = STOP_REASONS.get(ev.reason, "end_turn")
                self._sequence = ev.stop_sequence
            elif isinstance(ev, UsageReport):
                self._usage = merge_usage(self._usage, ev.usage)
        return b"".join(out)

    def _thinking(self, ev: ThinkingDelta, out: list[bytes]) -> None:
        if ev.redacted:
            self._close(out)
            self._open("redacted", {"type": "redacted_thinking", "data": ev.signature or ""}, out)
            self._close(out)
            return
        if ev.text:
            self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta({"type": "thinking_delta", "thinking": ev.text}))
        if ev.signature and self._block == "thinking":
            out.append(self._delta({"type": "signature_delta", "signature": ev.signature}))

    def _open_tool(self, index: int, out: list[bytes]) -> None:
        call_id, name = self._tools.get(index, ("", ""))
        block = {
            "type": "tool_use",
            "id": call_id or f"toolu_{self._id}_{self._index + 1}",
            "name": name,
            "input": {},
        }
        self._open(f"tool:{index}", block, out)

    def _start(self, out: list[bytes]) -> None:
        """`message_start`, once, before anything else."""
        if self._started:
            return
        self._started = True
        usage = usage_json(self._usage or Usage())
        usage["output_tokens"] = 0
        message: JsonObject = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._alias,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(event("message_start", {"type": "message_start", "message": message}))

    def _ensure(self, key: str, block: JsonObject, out: list[bytes]) -> None:
        if self._block != key:
            self._open(key, block, out)

    def _open(self, key: str, block: JsonObject, out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._block = key
        out.append(self._event("content_block_start", content_block=block))

    def _close(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(self._event("content_block_stop"))
            self._block = None

    def _delta(self, delta: JsonObject) -> bytes:
        return self._event("content_block_delta", delta=delta)

    def _event(self, kind: str, **fields: Any) -> bytes:
        return event(kind, {"type": kind, "index": self._index, **fields})

    def finish(self) -> bytes:
        """The events that end a stream that ended well."""
        out: list[bytes] = []
        self._start(out)  # an upstream that sent nothing but its end
        self._close(out)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": self._sequence}
        usage = usage_json(self._usage or Usage())
        out.append(
            event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        return error_event(err)


# --- same-family relay -----------------------------------------------------------------------

_STOP = event("message_stop", {"type": "message_stop"})


class PassthroughStream:
    """Relays Anthropic SSE from an Anthropic target: each event re-framed as received, only
    `message_start.message.model` := alias; usage read from `message_start` and
    `message_delta`; `message_stop` ends (sent by `terminal`); `event: error` raises."""

    __slots__ = (
        "_alias",
        "_failed",
        "_failure_frame",
        "_sse",
        "_tally",
        "done",
        "generated_chars",
        "usage",
    )

    def __init__(self, alias: str) -> None:
        self._alias = alias
        self._sse = SSEDecoder()
        self._tally = UsageTally()
        self._failed: UpstreamError | None = None
        #: the upstream's own `event: error` frame, relayed as the stream's last event
        self._failure_frame: bytes | None = None
        self.usage: Usage | None = None
        self.generated_chars = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        return self._relay(self._sse.feed(data))

    def end(self) -> bytes:
        return self._relay(self._sse.flush())

    def _relay(self, frames: list[SSEEvent]) -> bytes:
        if self._failed is not None:
            raise self._failed
        out: list[bytes] = []
        for frame in frames:
            if self.done:
                break
            name, data = frame.event, frame.data
            if name == "content_block_delta":
                self._count(data)
            elif name == "message_start":
                payload = load_event(data)
                message = payload.get("message")
                if isinstance(message, dict):
                    message["model"] = self._alias
                    self._observe(message.get("usage"))
                data = orjson.dumps(payload)
            elif name == "message_delta":
                self._observe(load_event(data).get("usage"))
            elif name == "message_stop":
                self.done = True
                break
            elif name == "error":
                # the frames before it in this read still reach the client; the failure is
                # raised now, or on the next read when there are some
                payload = load_event(data)
                self._failed = stream_error(payload)
                self._failure_frame = event("error", payload)
                if not out:
                    raise self._failed
                break
            head = b"event: " + name.encode() + b"\n" if name else b""
            if b"\n" in data:  # a multi-line payload keeps one `data:` field per line
                data = data.replace(b"\n", b"\ndata: ")
            out.append(head + b"data: " + data + b"\n\n")
        return b"".join(out)

    def _observe(self, raw: Any) -> None:
        usage = self._tally.add(raw)
        if usage is not None:
            self.usage = usage

    def _count(self, data: bytes) -> None:
        delta = load_event(data).get("delta")
        if isinstance(delta, dict):
            for name in ("text", "partial_json", "thinking"):
                value = delta.get(name)
                if isinstance(value, str):
                    self.generated_chars += len(value.encode())

    def terminal(self) -> bytes:
        return _STOP

    def error(self, err: GatewayError) -> bytes:
        """The upstream's own error event when that is what ended the stream (its type, such
        as `overloaded_error`, tells Anthropic clients how to retry), else the gateway's."""
        if err is self._failed and self._failure_frame is not None:
            return self._failure_frame
        return error_event(err)
