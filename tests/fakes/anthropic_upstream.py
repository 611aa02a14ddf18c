"""Scriptable fake Anthropic Messages API for tests, on a real socket.

`FakeAnthropicUpstream` serves `POST /v1/messages` (JSON or SSE in the documented event order:
`message_start`, `ping`, per block `content_block_start` / `content_block_delta` /
`content_block_stop`, `message_delta`, `message_stop`) and `POST /v1/messages/count_tokens`,
in an aiohttp server on its own thread so synchronous tests and the official `anthropic` SDK
can call it. It records every request (headers, body) and answers each with the next scripted
`Reply`: error envelopes (`{"type": "error", "error": {...}}`) with status and Retry-After,
delays, thinking / tool_use / raw content blocks, cache usage, an `event: error` mid-stream,
a dropped connection after N events, or raw SSE frames. Without a script it echoes the last
user text ("echo: ...") with usage estimated as UTF-8 bytes / 4.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.aiohttp_fake import AiohttpFake
from fakes.openai_upstream import RecordedRequest, _drop, _pause

JsonObject = dict[str, Any]

__all__ = ["FakeAnthropicUpstream", "RecordedRequest", "Reply", "sse", "text_of"]


@dataclass
class Reply:
    """How to answer one request; the default is a good echo answer."""

    status: int = 200
    json: Any = None  # body sent as JSON (an error envelope, a hand-made answer)
    raw_body: bytes | None = None  # body sent verbatim, status as given
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | str | None = None
    delay_s: float = 0.0  # before the response head
    chunk_delay_s: float = 0.0  # between stream events
    drop_connection: bool = False  # close the socket without answering
    cut_after_events: int | None = None  # stream: drop the connection after N events
    error_after_events: int | None = None  # stream: `event: error` after N events, then end
    error_event: JsonObject | None = None  # the error object of that event
    sse_frames: list[str] | None = None  # stream body written verbatim, frame by frame
    content: str | None = None  # answer text instead of "echo: <last user text>"
    thinking: str | None = None  # a thinking block before the text
    signature: str = "sig-fake-0001"  # its signature
    redacted_thinking: str | None = None  # a redacted_thinking block (its `data`)
    tool_uses: list[JsonObject] | None = None  # [{"id"?, "name", "input"}] after the text
    blocks: list[JsonObject] | None = None  # the content blocks verbatim (non-stream only)
    stop_reason: str | None = None  # default: tool_use with tool_uses, else end_turn
    stop_sequence: str | None = None
    usage: JsonObject | None = None  # merged over the estimated usage
    chunks: int = 3  # text deltas per text block
    input_tokens: int | None = None  # count_tokens answer instead of the estimate

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "upstream says no",
        err_type: str = "api_error",
        retry_after: int | str | None = None,
        **kwargs: Any,
    ) -> Reply:
        body = {"type": "error", "error": {"type": err_type, "message": message}}
        return cls(status=status, json=body, retry_after=retry_after, **kwargs)


def estimate(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def text_of(content: Any) -> str:
    """The text in a `content` / `system` value (string or blocks, tool results included)."""
    if isinstance(content, str):
        return content
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            elif block.get("type") == "tool_result":
                out.append(text_of(block.get("content")))
    return "".join(out)


def prompt_text(body: JsonObject) -> str:
    parts = [text_of(body.get("system"))]
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            parts.append(text_of(message.get("content")))
    if body.get("tools"):
        parts.append(orjson.dumps(body["tools"]).decode())
    return "".join(parts)


def last_user_text(body: JsonObject) -> str:
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def credential(headers: dict[str, str]) -> str | None:
    """The API key a request carries: `x-api-key` (the documented header) or, as current
    SDKs send it, `Authorization: Bearer <key>`."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def sse(kind: str, data: JsonObject) -> str:
    return f"event: {kind}\ndata: {orjson.dumps(data).decode()}\n\n"


def split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = math.ceil(len(text) / max(1, min(pieces, len(text))))
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeAnthropicUpstream(AiohttpFake):
    """An Anthropic Messages upstream with per-request scripted behaviour (module docstring)."""

    name = "fake-anthropic-upstream"

    def __init__(self, *, host: str = "127.0.0.1", api_key: str | None = None) -> None:
        super().__init__(host=host)
        #: when set, requests without this key (`x-api-key` or Bearer) get 401
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.default = Reply()
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()

    # -- control -------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.default = Reply()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} upstream requests, got {len(self.requests)}"
                )
            time.sleep(0.01)
        return list(self.requests)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.query_string,
                headers,
                body,
                parsed,
                time.time(),
            )
        )
        reply = self._next_reply()
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.drop_connection:
            return _drop(request)
        extra = {"request-id": "req_fake_" + uuid.uuid4().hex[:16], **reply.headers}
        if reply.retry_after is not None:
            extra["retry-after"] = str(reply.retry_after)
        if self.api_key is not None and credential(headers) != self.api_key:
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return _json({"type": "error", "error": error}, extra, 401)
        if reply.raw_body is not None:
            return web.Response(
                body=reply.raw_body,
                status=reply.status,
                headers=extra,
                content_type="application/json",
            )
        if reply.json is not None or reply.status != 200:
            payload = reply.json
            if payload is None:
                error = {"type": "api_error", "message": f"fake upstream error {reply.status}"}
                payload = {"type": "error", "error": error}
            return _json(payload, extra, reply.status)
        if reply.sse_frames is not None:
            return await self._stream(request, reply, extra, reply.sse_frames)
        if request.method != "POST" or not isinstance(parsed, dict):
            return _json(_invalid("fake upstream: expected a JSON POST"), extra, 400)
        if request.path == "/v1/messages/count_tokens":
            count = reply.input_tokens
            return _json(
                {"input_tokens": estimate(prompt_text(parsed)) if count is None else count}, extra
            )
        if request.path != "/v1/messages":
            return _json(_not_found(request.path), extra, 404)
        problem = _check(parsed)
        if problem:
            return _json(_invalid(problem), extra, 400)
        message = _message(reply, parsed)
        if parsed.get("stream") is True:
            return await self._stream(request, reply, extra, _events(reply, message))
        return _json(message, extra)

    async def _stream(
        self, request: web.Request, reply: Reply, extra: dict[str, str], frames: list[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **extra},
        )
        await response.prepare(request)
        try:
            for i, frame in enumerate(frames):
                if reply.cut_after_events is not None and i >= reply.cut_after_events:
                    return _drop(request, response)
                if reply.error_after_events is not None and i >= reply.error_after_events:
                    error = reply.error_event or {
                        "type": "overloaded_error",
                        "message": "Overloaded",
                    }
                    await response.write(sse("error", {"type": "error", "error": error}).encode())
                    break
                if i and reply.chunk_delay_s > 0:
                    await _pause(request, reply.chunk_delay_s)
                await response.write(frame.encode())
        except ConnectionResetError:
            raise asyncio.CancelledError from None
        await response.write_eof()
        return response


def _json(body: Any, extra: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=extra, content_type="application/json"
    )


def _invalid(message: str) -> JsonObject:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def _not_found(path: str) -> JsonObject:
    return {"type": "error", "error": {"type": "not_found_error", "message": f"no route {path}"}}


def _check(body: JsonObject) -> str | None:
    """What the real API refuses first: model, max_tokens, messages."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    return None


def _message(reply: Reply, body: JsonObject) -> JsonObject:
    """The complete answer (the non-stream body; the stream is derived from it)."""
    text = reply.content if reply.content is not None else "echo: " + last_user_text(body)
    blocks: list[JsonObject]
    if reply.blocks is not None:
        blocks = list(reply.blocks)
    else:
        blocks = []
        if reply.thinking is not None:
            blocks.append(
                {"type": "thinking", "thinking": reply.thinking, "signature": reply.signature}
            )
        if reply.redacted_thinking is not None:
            blocks.append({"type": "redacted_thinking", "data": reply.redacted_thinking})
        if text:
            blocks.append({"type": "text", "text": text})
        for i, tool in enumerate(reply.tool_uses or ()):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": tool.get("id", f"toolu_fake{i:04d}"),
                    "name": tool["name"],
                    "input": tool.get("input", {}),
                }
            )
    usage: JsonObject = {
        "input_tokens": estimate(prompt_text(body)),
        "output_tokens": estimate(text),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    usage.update(reply.usage or {})
    stop = reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn")
    return {
        "id": "msg_fake" + uuid.uuid4().hex[:20],
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": reply.stop_sequence,
        "usage": usage,
    }


def _events(reply: Reply, message: JsonObject) -> list[str]:
    """The message as the documented SSE event sequence."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    frames = [sse("message_start", {"type": "message_start", "message": head})]
    frames.append(sse("ping", {"type": "ping"}))
    for index, block in enumerate(message["content"]):
        frames.extend(_block_events(index, block, reply.chunks))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    end_usage = {k: v for k, v in usage.items() if k != "input_tokens"}
    frames.append(
        sse("message_delta", {"type": "message_delta", "delta": delta, "usage": end_usage})
    )
    frames.append(sse("message_stop", {"type": "message_stop"}))
    return frames


def _block_events(index: int, block: JsonObject, chunks: int) -> list[str]:
    kind = block.get("type")
    deltas: list[JsonObject] = []
    if kind == "text":
        start: JsonObject = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": t} for t in split(block["text"], chunks)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": t} for t in split(block["thinking"], chunks)
        ]
        deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        arguments = orjson.dumps(block.get("input", {})).decode()
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in split(arguments, 2)]
    else:  # redacted_thinking, server tool blocks: sent whole in the start event
        start = block
    frames = [
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    ]
    for delta in deltas:
        frames.append(
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        )
    frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return frames
