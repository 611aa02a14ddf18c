"""OpenAI client APIs as inbound codecs: chat, completions and embeddings (contract §6.7–6.10).

`CHAT` parses a chat request (checked as `aisix.wire.request` does), turns it into a canonical
request for translated attempts, renders canonical answers and streams as `chat.completion`
objects and chunks, and relays same-family streams with `model` rewritten (the fast path:
one orjson round trip per chunk, the forced usage chunk dropped unless the client asked).
`COMPLETIONS` and `EMBEDDINGS` are served by OpenAI-family targets only (translation is 501),
except embeddings, which families with an `EmbeddingCodec` serve through `to_embeddings`.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import orjson

from aisix.errors import GatewayError, InvalidRequest, NotImplementedByAdapter
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.openai import FAMILY, load_chunk, usage_json, usage_of
from aisix.wire.request import client_wants_usage, invalid, parse_body
from aisix.wire.sse import SSEDecoder
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FilePart,
    Finish,
    ImagePart,
    Message,
    NamedTool,
    NativePart,
    Part,
    Role,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    Usage,
    UsageReport,
)

DONE = b"data: [DONE]\n\n"
_CANONICAL_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "seed",
        "user",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
    }
)


def chat_id(request_id: str) -> str:
    return "chatcmpl-" + "".join(c for c in request_id if c.isalnum())


# --- OpenAI request → canonical --------------------------------------------------------------


def _parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for item in content or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(TextPart(item["text"]))
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                parts.append(_image(url, image.get("detail") if isinstance(image, dict) else None))
        elif kind == "file" and isinstance(item.get("file"), dict):
            parts.append(_file(item["file"]))
        else:
            parts.append(NativePart(FAMILY, item))
    return parts


def _image(url: str, detail: Any) -> ImagePart:
    detail = detail if isinstance(detail, str) else None
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(data=data, media_type=media_type or "image/png", detail=detail)
    return ImagePart(url=url, detail=detail)


def _file(file: dict[str, Any]) -> FilePart:
    data = file.get("file_data")
    name = file.get("filename") if isinstance(file.get("filename"), str) else None
    if isinstance(data, str) and data.startswith("data:") and ";base64," in data:
        media_type, _, payload = data[5:].partition(";base64,")
        return FilePart(data=payload, media_type=media_type, name=name)
    file_id = file.get("file_id")
    return FilePart(file_id=file_id if isinstance(file_id, str) else None, name=name)


def _message(raw: dict[str, Any]) -> Message:
    role = raw["role"]
    if role == "developer":
        role = "system"
    elif role == "function":
        role = "tool"
    canonical_role: Role = role
    message = Message(canonical_role, _parts(raw.get("content")))
    if role == "assistant":
        reasoning = raw.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            message.content.insert(0, ThinkingPart(text=reasoning))
        for call in raw.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                message.tool_calls.append(
                    ToolCall(
                        str(call.get("id") or ""),
                        str(function.get("name") or ""),
                        arguments if isinstance(arguments, str) else "{}",
                    )
                )
    elif role == "tool":
        call_id = raw.get("tool_call_id") or raw.get("name")
        message.tool_call_id = str(call_id) if call_id is not None else None
    if isinstance(raw.get("name"), str) and role != "tool":
        message.name = raw["name"]
    return message


def _stops(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise invalid('"stop" must be a string or an array of strings', "stop")
    return [s for s in raw if isinstance(s, str)]


def _tools(raw: Any, dropped: list[str]) -> list[Tool]:
    tools: list[Tool] = []
    if raw is not None and not isinstance(raw, list):
        raise invalid('"tools" must be an array', "tools")
    for tool in raw or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            dropped.append(f"tool:{tool.get('type') if isinstance(tool, dict) else '?'}")
            continue
        parameters = function.get("parameters")
        if not isinstance(parameters, dict):
            parameters = {"type": "object", "properties": {}}
        description = function.get("description")
        tools.append(
            Tool(
                function["name"],
                description if isinstance(description, str) else None,
                parameters,
            )
        )
    return tools


def _tool_choice(raw: Any) -> ToolChoice | None:
    if raw in ("auto", "none", "required"):
        choice: ToolChoice = raw
        return choice
    if isinstance(raw, dict):
        function = raw.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return NamedTool(function["name"])
    return None


def chat_to_canonical(body: dict[str, Any]) -> ChatRequest:
    """A checked chat body as a canonical request (unknown fields kept in `extra`)."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise invalid('"n" greater than 1 is not supported by this model', "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stop = body.get("stop")
    request = ChatRequest(
        model=body["model"],
        messages=[_message(m) for m in body["messages"]],
        stream=body.get("stream") is True,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=_number(body.get("temperature")),
        top_p=_number(body.get("top_p")),
        stop=_stops(stop),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=body.get("response_format")
        if isinstance(body.get("response_format"), dict)
        else None,
        reasoning_effort=body.get("reasoning_effort")
        if isinstance(body.get("reasoning_effort"), str)
        else None,
        n=n if isinstance(n, int) else None,
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        include_usage=client_wants_usage(body),
        extra={k: v for k, v in body.items() if k not in _CANONICAL_FIELDS},
        source_family=FAMILY,
    )
    request.tools = _tools(body.get("tools"), request.dropped)
    parallel = body.get("parallel_tool_calls")
    request.parallel_tool_calls = parallel if isinstance(parallel, bool) else None
    return request


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# --- canonical → OpenAI answers --------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    text = message.text()
    # `content` is null for tool-call-only answers (contract §6.7)
    content = text if text or not message.tool_calls else None
    out: dict[str, Any] = {"role": "assistant", "content": content}
    reasoning = "".join(p.text for p in message.content if isinstance(p, ThinkingPart))
    if reasoning:
        out["reasoning_content"] = reasoning
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for i, call in enumerate(message.tool_calls)
        ]
    return out


def render_chat(response: ChatResponse, alias: str, request_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": response.id or chat_id(request_id),
        "object": "chat.completion",
        "created": response.created or int(time.time()),
        "model": alias,
        "choices": [
            {
                "index": 0,
                "message": message_json(response.message),
                "finish_reason": response.finish_reason or "stop",
            }
        ],
    }
    if response.usage is not None:
        out["usage"] = usage_json(response.usage)
    return out


class ChunkEncoder:
    """Canonical events → `chat.completion.chunk` SSE (one instance per stream)."""

    __slots__ = ("_base", "_include_usage", "_reason", "_role_sent", "_usage")

    def __init__(self, alias: str, request_id: str, include_usage: bool) -> None:
        self._base = {
            "id": chat_id(request_id),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": alias,
        }
        self._include_usage = include_usage
        self._role_sent = False
        self._reason: str | None = None
        self._usage: Usage | None = None

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> bytes:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return b"data: " + orjson.dumps({**self._base, "choices": [choice]}) + b"\n\n"

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            if isinstance(ev, TextDelta):
                out.append(self._chunk({"content": ev.text}))
            elif isinstance(ev, ThinkingDelta):
                if ev.text:
                    out.append(self._chunk({"reasoning_content": ev.text}))
            elif isinstance(ev, ToolCallStart):
                call = {
                    "index": ev.index,
                    "id": ev.id or f"call_{ev.index}",
                    "type": "function",
                    "function": {"name": ev.name, "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(ev, ToolCallDelta):
                call = {"index": ev.index, "function": {"arguments": ev.arguments}}
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(ev, Finish):
                self._reason = ev.reason
            elif isinstance(ev, UsageReport):
                self._usage = merge_usage(self._usage, ev.usage)
            elif isinstance(ev, StreamStart):
                if ev.usage is not None:
                    self._usage = merge_usage(self._usage, ev.usage)
                if not self._role_sent:
                    out.append(self._chunk({"content": ""}))
        return b"".join(out)

    def finish(self) -> bytes:
        out = [self._chunk({}, self._reason or "stop")]
        if self._include_usage and self._usage is not None:
            usage = {**self._base, "choices": [], "usage": usage_json(self._usage)}
            out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        out.append(DONE)
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        return error_event(err)


def merge_usage(old: Usage | None, new: Usage) -> Usage:
    """A later usage report refines an earlier one: non-zero fields replace."""
    if old is None:
        return new
    prompt = new.prompt_tokens or old.prompt_tokens
    completion = new.completion_tokens or old.completion_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=new.cached_tokens or old.cached_tokens,
        total_tokens=max(new.total_tokens, prompt + completion),
        cache_creation_tokens=new.cache_creation_tokens or old.cache_creation_tokens,
        reasoning_tokens=new.reasoning_tokens or old.reasoning_tokens,
    )


def error_event(err: GatewayError) -> bytes:
    body = {"error": {"message": err.message, "type": err.type}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


# --- same-family relay ----------------------------------------------------------------------


class PassthroughStream:
    """Relays OpenAI SSE: `model` := alias, usage observed, forced usage chunk dropped unless
    the client asked for it, `[DONE]` ends (and is re-sent by `terminal`)."""

    __slots__ = ("_alias", "_sse", "_wants_usage", "done", "generated_chars", "usage")

    def __init__(self, alias: str, include_usage: bool) -> None:
        self._alias = alias
        self._wants_usage = include_usage
        self._sse = SSEDecoder()
        self.usage: Usage | None = None
        self.generated_chars = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        return self._relay(self._sse.payloads(data))

    def end(self) -> bytes:
        return self._relay(self._sse.flush_payloads())

    def _relay(self, payloads: list[bytes]) -> bytes:
        out: list[bytes] = []
        for payload in payloads:
            if self.done:
                break
            if payload == b"[DONE]":
                self.done = True
                break
            rewritten = self._rewrite(payload)
            if rewritten is not None:
                out.append(rewritten)
        return b"".join(out)

    def _rewrite(self, payload: bytes) -> bytes | None:
        chunk = load_chunk(payload)
        chunk["model"] = self._alias
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage is not None:
            parsed = usage_of(usage)
            if parsed is not None:
                self.usage = parsed
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    if isinstance(text, str):
                        self.generated_chars += len(text.encode())
        if not self._wants_usage:
            if not choices and usage is not None:
                return None
            if "usage" in chunk and usage is None:
                del chunk["usage"]
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def terminal(self) -> bytes:
        return DONE

    def error(self, err: GatewayError) -> bytes:
        return error_event(err)


class _OpenAIInbound:
    family = FAMILY
    name = "openai"
    endpoint: Endpoint = "chat"
    forward_headers: frozenset[bytes] = frozenset()

    def parse(self, raw: bytes) -> dict[str, Any]:
        return parse_body(raw, self.endpoint)

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        raise NotImplementedByAdapter(f"{self.endpoint} is served by OpenAI-family targets only")

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return render_chat(response, alias, request_id)

    def stream_encoder(self, alias: str, request_id: str, body: dict[str, Any]) -> StreamEncoder:
        return ChunkEncoder(alias, request_id, client_wants_usage(body))

    def passthrough_stream(self, alias: str, body: dict[str, Any]) -> StreamRelay:
        return PassthroughStream(alias, client_wants_usage(body))

    def passthrough_answer(self, body: dict[str, Any], alias: str) -> dict[str, Any]:
        body["model"] = alias
        return body

    def error_body(self, err: GatewayError) -> bytes:
        return err.openai_body()


class ChatInbound(_OpenAIInbound):
    name = "openai-chat"
    endpoint: Endpoint = "chat"

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        return chat_to_canonical(body)


class CompletionsInbound(_OpenAIInbound):
    name = "openai-completions"
    endpoint: Endpoint = "completions"


class EmbeddingsInbound(_OpenAIInbound):
    name = "openai-embeddings"
    endpoint: Endpoint = "embeddings"

    def to_embeddings(self, body: dict[str, Any]) -> EmbeddingRequest:
        inputs = body["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not all(isinstance(i, str) for i in inputs):
            raise InvalidRequest(
                "request payload is invalid: token-array inputs are served by OpenAI-family "
                "targets only",
                param="input",
            )
        dims = body.get("dimensions")
        fmt = body.get("encoding_format")
        return EmbeddingRequest(
            model=body["model"],
            inputs=list(inputs),
            dimensions=dims if isinstance(dims, int) else None,
            encoding_format=fmt if isinstance(fmt, str) else None,
            user=body.get("user") if isinstance(body.get("user"), str) else None,
        )

    @staticmethod
    def render_embeddings(
        response: EmbeddingResponse, alias: str, encoding_format: str | None
    ) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for i, vector in enumerate(response.vectors):
            embedding: Any = vector
            if encoding_format == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        usage = response.usage or Usage()
        return {
            "object": "list",
            "data": data,
            "model": alias,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }


CHAT = ChatInbound()
COMPLETIONS = CompletionsInbound()
EMBEDDINGS = EmbeddingsInbound()
