"""Anthropic Messages inbound (`POST /v1/messages`, contract §6.9) for OpenAI-family targets.

`parse_messages` checks what the translation relies on (400s name the field); `to_chat` turns
the Messages request into a chat request (system → system message, content blocks → parts,
`tool_use` / `tool_result` → `tool_calls` / `tool` messages, `stop_sequences` → `stop`,
`tool_choice` mapped); `to_message` turns a chat completion into a Messages answer; and
`MessagesStream` turns chat stream chunks into Anthropic events (`message_start`, per block
`content_block_start` / `_delta` / `_stop`, then `message_delta` and `message_stop`), with a
failure after the head sent as `event: error`. Pure functions and one small state machine; the
pipeline and relay call them.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import GatewayError, NotImplementedByAdapter
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.openai_in import chat_to_canonical, render_chat
from aisix.wire.request import invalid, parse_model_request
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    Finish,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_PASSED = ("temperature", "top_p", "stream")


def parse_messages(raw: bytes) -> dict[str, Any]:
    """The Messages request body, checked: `model`, `messages` and `max_tokens` are required."""
    body = parse_model_request(raw)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid('"max_tokens" is required and must be a positive integer', "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid('"messages" must be a non-empty array', "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid(f"messages[{i}].role must be user or assistant", "messages")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise invalid(f"messages[{i}].content must be a string or an array", "messages")
        if isinstance(content, list) and not all(isinstance(b, dict) for b in content):
            raise invalid(f"messages[{i}].content blocks must be objects", "messages")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise invalid('"system" must be a string or an array of text blocks', "system")
    return body


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request for a checked Messages request."""
    chat: dict[str, Any] = {"model": body["model"], "max_tokens": body["max_tokens"]}
    for name in _PASSED:
        if name in body:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        chat["stop"] = stops
    messages: list[dict[str, Any]] = []
    system = _text_of(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body["messages"]:
        messages.extend(_chat_messages(message["role"], message["content"]))
    chat["messages"] = messages
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [_chat_tool(t) for t in tools if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "any":
            chat["tool_choice"] = "required"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif kind in ("auto", "none"):
            chat["tool_choice"] = kind
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return chat


def _text_of(value: Any) -> str:
    """A string, or the text blocks of a block array joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            b["text"]
            for b in value
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _chat_messages(role: str, content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            url = _image_url(block.get("source"))
            if url:
                parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            name = block.get("name", "")
            call = {"id": block.get("id", ""), "type": "function"}
            calls.append({**call, "function": {"name": name, "arguments": arguments}})
        elif kind == "tool_result":
            result = block.get("content")
            text = result if isinstance(result, str) else _text_of(result)
            tool = {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
            out.append(tool)  # tool answers come before the user's own words
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        if text or calls:
            out.append(message)
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        user = "".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": "user", "content": user})
    return out


def _image_url(source: Any) -> str | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.get("name", "")}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def to_message(answer: dict[str, Any], alias: str, message_id: str) -> dict[str, Any]:
    """The Messages answer for a chat completion."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{message_id}_{len(content)}",
                    "name": function.get("name", ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content,
        "stop_reason": STOP_REASONS.get(finish or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": _int(usage.get("prompt_tokens")),
            "output_tokens": _int(usage.get("completion_tokens")),
        },
    }


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def message_id(request_id: str) -> str:
    """`msg_` and the request id's characters that are safe in an id."""
    return "msg_" + "".join(c for c in request_id if c.isalnum())


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesStream:
    """Chat stream chunks in, Anthropic stream events out (one instance per stream)."""

    __slots__ = ("_alias", "_block", "_id", "_index", "_input", "_output", "_started", "_stop")

    def __init__(self, alias: str, message_id: str) -> None:
        self._alias = alias
        self._id = message_id
        self._started = False
        self._index = -1  # index of the last block opened
        self._block: str | None = None  # "text" or "tool:<chat tool index>" while one is open
        self._stop: str | None = None
        self._input = 0
        self._output = 0

    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        out: list[bytes] = []
        self._start(out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._input = _int(usage.get("prompt_tokens")) or self._input
            self._output = _int(usage.get("completion_tokens")) or self._output
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self._stop = STOP_REASONS.get(finish, "end_turn")
        return b"".join(out) if out else None

    def _start(self, out: list[bytes]) -> None:
        """`message_start`, once, before anything else."""
        if not self._started:
            self._started = True
            message: dict[str, Any] = {
                "id": self._id,
                "type": "message",
                "role": "assistant",
                "model": self._alias,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            out.append(event("message_start", {"type": "message_start", "message": message}))

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._block != "text":
                self._open({"type": "text", "text": ""}, "text", out)
            body = {"type": "text_delta", "text": text}
            out.append(self._block_event("content_block_delta", delta=body))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            key = f"tool:{call.get('index', 0)}"
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            if self._block != key:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{self._id}_{self._index + 1}",
                    "name": function.get("name") or "",
                    "input": {},
                }
                self._open(block, key, out)
            fragment = function.get("arguments")
            if isinstance(fragment, str) and fragment:
                body = {"type": "input_json_delta", "partial_json": fragment}
                out.append(self._block_event("content_block_delta", delta=body))

    def _open(self, block: dict[str, Any], key: str, out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._block = key
        out.append(self._block_event("content_block_start", content_block=block))

    def _close(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(self._block_event("content_block_stop"))
            self._block = None

    def _block_event(self, kind: str, **fields: Any) -> bytes:
        return event(kind, {"type": kind, "index": self._index, **fields})

    def finish(self) -> bytes:
        """The events that end a stream that ended well."""
        out: list[bytes] = []
        self._start(out)  # an upstream that sent nothing but `[DONE]`
        self._close(out)
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        usage = {"input_tokens": self._input, "output_tokens": self._output}
        out.append(
            event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    @staticmethod
    def error(err: GatewayError) -> bytes:
        """The final event of a stream that failed after its head."""
        failure = {"type": err.anthropic_type(), "message": err.message}
        return event("error", {"type": "error", "error": failure})


# --- the Messages API as an inbound codec, translated through chat ------------------------
# (interim: the native Anthropic family codec replaces this module)


class _ViaChatEncoder:
    """Canonical events → OpenAI chunk dicts → `MessagesStream` Anthropic events."""

    __slots__ = ("_stream",)

    def __init__(self, alias: str, request_id: str) -> None:
        self._stream = MessagesStream(alias, message_id(request_id))

    def encode(self, events: list[StreamEvent]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            chunk = _as_chunk(ev)
            if chunk is not None:
                encoded = self._stream.chunk(chunk)
                if encoded:
                    out.append(encoded)
        return b"".join(out)

    def finish(self) -> bytes:
        return self._stream.finish()

    def error(self, err: GatewayError) -> bytes:
        return self._stream.error(err)


def _as_chunk(ev: StreamEvent) -> dict[str, Any] | None:
    if isinstance(ev, StreamStart):
        return {}
    if isinstance(ev, TextDelta):
        return {"choices": [{"delta": {"content": ev.text}}]}
    if isinstance(ev, ToolCallStart):
        call = {"index": ev.index, "id": ev.id, "function": {"name": ev.name}}
        return {"choices": [{"delta": {"tool_calls": [call]}}]}
    if isinstance(ev, ToolCallDelta):
        call = {"index": ev.index, "function": {"arguments": ev.arguments}}
        return {"choices": [{"delta": {"tool_calls": [call]}}]}
    if isinstance(ev, Finish):
        return {"choices": [{"delta": {}, "finish_reason": ev.reason}]}
    if isinstance(ev, UsageReport):
        usage = ev.usage
        tokens = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        return {"usage": tokens}
    return None


class MessagesViaChat:
    name = "anthropic-messages"
    family = "anthropic"
    endpoint: Endpoint = "messages"
    forward_headers: frozenset[bytes] = frozenset({b"anthropic-beta", b"anthropic-version"})

    def parse(self, raw: bytes) -> dict[str, Any]:
        return parse_messages(raw)

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        request = chat_to_canonical(to_chat(body))
        request.source_family = self.family
        request.extra = {}
        return request

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return to_message(render_chat(response, alias, request_id), alias, message_id(request_id))

    def stream_encoder(self, alias: str, request_id: str, body: dict[str, Any]) -> StreamEncoder:
        return _ViaChatEncoder(alias, request_id)

    def passthrough_stream(self, alias: str, body: dict[str, Any]) -> StreamRelay:
        raise NotImplementedByAdapter("native Anthropic streams are not available yet")

    def passthrough_answer(self, body: dict[str, Any], alias: str) -> dict[str, Any]:
        raise NotImplementedByAdapter("native Anthropic answers are not available yet")

    def error_body(self, err: GatewayError) -> bytes:
        return err.anthropic_body()


MESSAGES = MessagesViaChat()
