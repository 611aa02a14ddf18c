"""Scriptable fake OpenAI upstream for tests, on a real socket.

`FakeOpenAIUpstream` runs an aiohttp server in a background thread with its own event loop, so
synchronous tests (and the official `openai` SDK) can talk to it. It records every request
(method, path, headers, body, parsed JSON) and answers each one with the next scripted `Reply`
(status and error body, Retry-After, delays, stream cuts, malformed bodies, missing `[DONE]` or
usage, raw SSE frames), falling back to a good answer built by `aisix.demo_upstream`. It also
serves the media APIs: images, audio transcriptions/translations (multipart uploads: the WAV's
real duration is reported), audio speech (binary audio streamed in chunks), moderations and a
Cohere/Jina-shaped rerank.
"""

from __future__ import annotations

import asyncio
import collections
import email.parser
import io
import math
import ssl
import threading
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from aisix import demo_upstream as demo
from fakes.aiohttp_fake import AiohttpFake

JsonObject = dict[str, Any]


@dataclass
class RecordedRequest:
    """One request as the fake upstream received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lowercased; repeated headers joined with ", "
    body: bytes
    json: Any  # parsed body, or None when it is not JSON
    received_at: float


@dataclass
class Reply:
    """How to answer one request. The default is a good answer like the demo upstream's."""

    status: int = 200
    json: Any = None  # body sent as JSON instead of the built answer (e.g. an error envelope)
    raw_body: bytes | None = None  # body sent verbatim (e.g. malformed JSON), status as given
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: int | str | None = None
    delay_s: float = 0.0  # before the response head
    chunk_delay_s: float = 0.0  # between stream events
    first_chunk_delay_s: float = 0.0  # stream: after the 200 head, before the first event
    cut_after_chunks: int | None = None  # stream: drop the connection after N events
    drop_connection: bool = False  # close the socket without answering
    omit_done: bool = False  # stream: no final `data: [DONE]`
    omit_usage: bool = False  # no `usage` in the body, no usage chunk in the stream
    sse_frames: list[str] | None = None  # stream body written verbatim, frame by frame
    content: str | None = None  # reply text instead of "echo: <last user message>"
    usage: JsonObject | None = None  # usage instead of the computed one
    chunks: int | None = None  # content chunks per stream (default: the fake's `chunks`)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "upstream says no",
        err_type: str = "server_error",
        code: str | None = None,
        retry_after: int | str | None = None,
        **kwargs: Any,
    ) -> Reply:
        body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
        return cls(status=status, json=body, retry_after=retry_after, **kwargs)


class FakeOpenAIUpstream(AiohttpFake):
    """An OpenAI-compatible upstream with per-request scripted behaviour; see module docstring."""

    name = "fake-openai-upstream"

    def __init__(
        self, *, chunks: int = 4, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(host=host, tls=tls)
        self.chunks = chunks
        self.requests: list[RecordedRequest] = []
        #: monotonic times at which a client went away while a stream was being written
        self.disconnects: list[float] = []
        self.default = Reply()
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()

    # -- control -------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then `default` answers."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.default = Reply()

    def pending_replies(self) -> int:
        with self._lock:
            return len(self._script)

    def model_requests(self) -> list[RecordedRequest]:
        """Recorded POSTs (chat, completions, embeddings), oldest first."""
        return [r for r in list(self.requests) if r.method == "POST"]

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
        extra = dict(reply.headers)
        if reply.retry_after is not None:
            extra["Retry-After"] = str(reply.retry_after)
        if reply.raw_body is not None:
            return web.Response(
                body=reply.raw_body,
                status=reply.status,
                headers=extra,
                content_type="application/json",
            )
        if reply.json is not None or reply.status != 200:
            payload = reply.json if reply.json is not None else _default_error(reply.status)
            return web.Response(
                body=orjson.dumps(payload),
                status=reply.status,
                headers=extra,
                content_type="application/json",
            )
        if reply.sse_frames is not None:
            frames = [f.encode() for f in reply.sse_frames]
            return await self._stream(request, reply, extra, frames)
        media = _MEDIA.get(request.path)
        if media is not None and request.method == "POST":
            return await media(self, request, reply, extra, body)
        return await self._good_answer(request, reply, extra, parsed)

    async def _good_answer(
        self, request: web.Request, reply: Reply, extra: dict[str, str], body: Any
    ) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/v1/models":
            return _json(demo.models_response(), extra)
        if request.method != "POST" or not isinstance(body, dict):
            return _json(demo.error_body("fake upstream: unsupported request"), extra, 400)
        model = str(body.get("model", ""))
        stream = body.get("stream") is True
        builder = _BUILDERS.get(request.path)
        if builder is None:
            return _json(demo.error_body(f"fake upstream: no route {request.path}"), extra, 404)
        events = builder(self, reply, body, model, stream)
        if isinstance(events, dict):
            return _json(events, extra)
        if request.path == "/v1/responses":  # named events, no `[DONE]` (Responses API)
            frames = [
                b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events
            ]
            return await self._stream(request, reply, extra, frames)
        frames = [demo.sse_event(e) for e in events]
        if not reply.omit_done:
            frames.append(demo.sse_event("[DONE]"))
        return await self._stream(request, reply, extra, frames)

    async def _stream(
        self, request: web.Request, reply: Reply, extra: dict[str, str], frames: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **extra},
        )
        await response.prepare(request)
        try:
            if reply.first_chunk_delay_s > 0:
                await _pause(request, reply.first_chunk_delay_s)
            for i, frame in enumerate(frames):
                if reply.cut_after_chunks is not None and i >= reply.cut_after_chunks:
                    break
                if i and reply.chunk_delay_s > 0:
                    await _pause(request, reply.chunk_delay_s)
                await response.write(frame)
        except ConnectionResetError:  # the client (the gateway) closed the connection
            self.disconnects.append(time.monotonic())
            raise asyncio.CancelledError from None  # abandon the response, as `_drop` does
        if reply.cut_after_chunks is not None:
            return _drop(request, response)
        await response.write_eof()
        return response


def _json(body: Any, extra: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=extra, content_type="application/json"
    )


def _default_error(status: int) -> JsonObject:
    return demo.error_body(f"fake upstream error {status}", "server_error")


async def _pause(request: web.Request, seconds: float) -> None:
    """Sleep, noticing within ~10 ms when the client closes the connection meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client closed the connection")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.01))


def _drop(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the connection without finishing the response (the client sees a transport error)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    # Raising makes aiohttp abandon the response instead of trying to finish it.
    raise asyncio.CancelledError


def _usage(reply: Reply, computed: JsonObject, body: JsonObject, stream: bool) -> JsonObject | None:
    if reply.omit_usage or (stream and not demo.wants_usage(body)):
        return None
    return reply.usage if reply.usage is not None else computed


def _chat(
    fake: FakeOpenAIUpstream, reply: Reply, body: JsonObject, model: str, stream: bool
) -> JsonObject | list[JsonObject]:
    text = reply.content if reply.content is not None else demo.chat_reply_text(body)
    usage = _usage(reply, demo.chat_usage(body, text), body, stream)
    if stream:
        return demo.chat_stream_chunks(model, text, usage, chunks=reply.chunks or fake.chunks)
    return demo.chat_completion(model, text, usage)


def _completions(
    fake: FakeOpenAIUpstream, reply: Reply, body: JsonObject, model: str, stream: bool
) -> JsonObject | list[JsonObject]:
    text = reply.content if reply.content is not None else demo.completion_reply_text(body)
    usage = _usage(reply, demo.completion_usage(body, text), body, stream)
    if stream:
        return demo.text_completion_chunks(model, text, usage, chunks=reply.chunks or fake.chunks)
    return demo.text_completion(model, text, usage)


def _embeddings(
    fake: FakeOpenAIUpstream, reply: Reply, body: JsonObject, model: str, stream: bool
) -> JsonObject | list[JsonObject]:
    items = demo.embedding_inputs(body.get("input")) or []
    dims = body.get("dimensions", demo.DEFAULT_EMBEDDING_DIMENSIONS)
    encoding = "base64" if body.get("encoding_format") == "base64" else "float"
    out = demo.embeddings_response(model, items, int(dims), encoding)
    if reply.omit_usage:
        out.pop("usage")
    elif reply.usage is not None:
        out["usage"] = reply.usage
    return out


def _responses(
    fake: FakeOpenAIUpstream, reply: Reply, body: JsonObject, model: str, stream: bool
) -> JsonObject | list[JsonObject]:
    """The OpenAI Responses API: one message item echoing the last user input text."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    last = ""
    for item in items or ():
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                last = content
            elif isinstance(content, list):
                last = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = reply.content if reply.content is not None else "echo: " + last
    rid = demo.new_id("resp_")
    message = {
        "type": "message",
        "id": demo.new_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    prompt = demo.estimate_tokens(last)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": demo.estimate_tokens(text),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + demo.estimate_tokens(text),
    }
    done: JsonObject = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None if reply.omit_usage else usage,
    }
    if not stream:
        return done
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    opened = {**message, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    at = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    events: list[JsonObject] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": opened},
        {"type": "response.content_part.added", "part": part, **at},
    ]
    events += [
        {"type": "response.output_text.delta", "delta": piece, "logprobs": [], **at}
        for piece in demo.split_text(text, reply.chunks or fake.chunks)
    ]
    events += [
        {"type": "response.output_text.done", "text": text, "logprobs": [], **at},
        {"type": "response.content_part.done", "part": message["content"][0], **at},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": done},
    ]
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


_Builder = Callable[
    [FakeOpenAIUpstream, Reply, JsonObject, str, bool], "JsonObject | list[JsonObject]"
]
_BUILDERS: dict[str, _Builder] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completions,
    "/v1/embeddings": _embeddings,
    "/v1/responses": _responses,
}


# --- media APIs -------------------------------------------------------------------------------

#: the first bytes of every fake speech answer (an MP3 frame sync), then the text, repeated
SPEECH_MAGIC = b"\xff\xfbFAKEAUDIO:"


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name (values as bytes)."""
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, bytes] = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")  # type: ignore[union-attr]
        payload = part.get_payload(decode=True)  # type: ignore[union-attr]
        fields[str(name)] = payload if isinstance(payload, bytes) else b""
    return fields


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


def _bad(message: str, extra: dict[str, str]) -> web.Response:
    return _json(demo.error_body(message), extra, 400)


async def _images(
    fake: FakeOpenAIUpstream, request: web.Request, reply: Reply, extra: dict[str, str], raw: bytes
) -> web.StreamResponse:
    body = orjson.loads(raw)
    n = int(body.get("n") or 1)
    data = [
        {"url": f"https://fake.invalid/img/{i}.png", "revised_prompt": body["prompt"]}
        for i in range(n)
    ]
    return _json({"created": int(time.time()), "data": data}, extra)


async def _transcribe(
    fake: FakeOpenAIUpstream, request: web.Request, reply: Reply, extra: dict[str, str], raw: bytes
) -> web.StreamResponse:
    try:
        fields = form_fields(request.headers.get("Content-Type", ""), raw)
        seconds = wav_seconds(fields["file"])
    except (KeyError, wave.Error, EOFError, TypeError):
        return _bad("fake upstream: expected a multipart upload with a WAV file", extra)
    model = fields.get("model", b"").decode()
    text = f"fake transcript of {seconds:.2f}s by {model}"
    fmt = fields.get("response_format", b"json").decode()
    if fmt == "text":
        return web.Response(text=text, headers=extra, content_type="text/plain")
    if fmt == "verbose_json":
        task = "translate" if request.path.endswith("translations") else "transcribe"
        answer = {"task": task, "language": "english", "duration": seconds, "text": text}
        return _json(answer, extra)
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    return _json({"text": text, "usage": usage}, extra)


async def _speech(
    fake: FakeOpenAIUpstream, request: web.Request, reply: Reply, extra: dict[str, str], raw: bytes
) -> web.StreamResponse:
    body = orjson.loads(raw)
    kind = "audio/wav" if body.get("response_format") == "wav" else "audio/mpeg"
    response = web.StreamResponse(headers={"Content-Type": kind, **extra})
    await response.prepare(request)
    chunks = reply.chunks or fake.chunks
    for i in range(chunks):
        if i and reply.chunk_delay_s > 0:
            await _pause(request, reply.chunk_delay_s)
        await response.write(SPEECH_MAGIC + body["input"].encode() + b"#%d;" % i)
    await response.write_eof()
    return response


async def _moderations(
    fake: FakeOpenAIUpstream, request: web.Request, reply: Reply, extra: dict[str, str], raw: bytes
) -> web.StreamResponse:
    body = orjson.loads(raw)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    results = []
    for text in inputs:
        flagged = "kill" in str(text).lower()
        names = ("harassment", "hate", "self-harm", "sexual", "violence")
        results.append(
            {
                "flagged": flagged,
                "categories": {n: flagged and n == "violence" for n in names},
                "category_scores": {n: 0.9 if flagged and n == "violence" else 0.01 for n in names},
            }
        )
    answer = {"id": demo.new_id("modr-"), "model": body.get("model"), "results": results}
    return _json(answer, extra)


async def _rerank(
    fake: FakeOpenAIUpstream, request: web.Request, reply: Reply, extra: dict[str, str], raw: bytes
) -> web.StreamResponse:
    """Jina/Cohere shape: documents scored by the share of query words they contain."""
    body = orjson.loads(raw)
    words = set(str(body["query"]).lower().split())
    scored = []
    for i, doc in enumerate(body["documents"]):
        text = doc if isinstance(doc, str) else str(doc.get("text", ""))
        hits = len(words & set(text.lower().split()))
        scored.append(
            {"index": i, "relevance_score": hits / max(len(words), 1), "document": {"text": text}}
        )
    scored.sort(key=lambda r: -r["relevance_score"])  # type: ignore[operator]
    top = body.get("top_n") or len(scored)
    tokens = demo.estimate_tokens(str(body["query"])) * len(scored)
    answer = {
        "id": demo.new_id("rerank-"),
        "model": body.get("model"),
        "results": scored[:top],
        "usage": {"total_tokens": tokens},
    }
    return _json(answer, extra)


_Media = Callable[
    [FakeOpenAIUpstream, web.Request, Reply, dict[str, str], bytes], Awaitable[web.StreamResponse]
]
_MEDIA: dict[str, _Media] = {
    "/v1/images/generations": _images,
    "/v1/audio/transcriptions": _transcribe,
    "/v1/audio/translations": _transcribe,
    "/v1/audio/speech": _speech,
    "/v1/moderations": _moderations,
    "/v1/rerank": _rerank,
}
