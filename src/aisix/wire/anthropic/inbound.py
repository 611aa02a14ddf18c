"""`POST /v1/messages` as an inbound codec (contract §6.9; issue 11 item 2).

`parse` checks what every path relies on (`model`, `messages`, `max_tokens`; `system`-role
messages accepted anywhere, as current Claude Code sends them; any block type). For translated
attempts `to_canonical` maps blocks to parts (text with `cache_control` / `citations` kept in
`extra`, images, documents, tool use and results, thinking; anything else as a `NativePart`),
`render` builds the Messages answer and `MessagesEncoder` the Anthropic event sequence. Same
family, `PassthroughStream` relays the upstream SSE with only `model` rewritten in
`message_start`, reading usage from `message_start` / `message_delta`.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from aisix.errors import GatewayError
from aisix.wire.anthropic.common import FAMILY, STOP_REASONS, message_id, usage_json
from aisix.wire.anthropic.stream import MessagesEncoder, PassthroughStream
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.request import invalid, parse_model_request
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    FilePart,
    ImagePart,
    Message,
    NamedTool,
    NativePart,
    Part,
    Role,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)

JsonObject = dict[str, Any]
_ROLES = frozenset({"user", "assistant", "system"})
#: client headers relayed to Anthropic targets on native calls (contract §6.9)
FORWARD_HEADERS = frozenset({b"anthropic-beta", b"anthropic-version"})
#: block fields carried in `extra` (the canonical structs have no slot for them)
_BLOCK_EXTRA = ("cache_control", "citations", "context")
_CANONICAL_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
    }
)


# --- parse -----------------------------------------------------------------------------------


def _check_blocks(value: Any, where: str) -> None:
    if isinstance(value, list) and not all(isinstance(b, dict) for b in value):
        raise invalid(f"{where} blocks must be objects", where.split("[")[0].split(".")[0])


def parse_messages(raw: bytes) -> JsonObject:
    """The Messages request body, checked: `model`, `messages` and `max_tokens` required."""
    body = parse_model_request(raw)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid('"max_tokens" is required and must be a positive integer', "max_tokens")
    check_messages(body)
    return body


def check_messages(body: JsonObject) -> None:
    """`messages` (roles user, assistant, system), `system`, `tools`, `stop_sequences`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid('"messages" must be a non-empty array', "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise invalid(f"messages[{i}].role must be user, assistant or system", "messages")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise invalid(f"messages[{i}].content must be a string or an array", "messages")
        _check_blocks(content, f"messages[{i}].content")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise invalid('"system" must be a string or an array of text blocks', "system")
    _check_blocks(system, "system")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise invalid('"tools" must be an array of objects', "tools")
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise invalid('"stop_sequences" must be an array of strings', "stop_sequences")


# --- Messages request → canonical ------------------------------------------------------------


def _extra(block: JsonObject) -> dict[str, Any]:
    return {k: block[k] for k in _BLOCK_EXTRA if k in block}


def _image(block: JsonObject) -> Part:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type")
        media_type = media_type if isinstance(media_type, str) else "image/png"
        return ImagePart(data=source["data"], media_type=media_type, extra=_extra(block))
    if kind == "url" and isinstance(source.get("url"), str):
        return ImagePart(url=source["url"], extra=_extra(block))
    return NativePart(FAMILY, block)  # Files API ids and future sources


def _document(block: JsonObject) -> Part:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    extra = _extra(block)
    data, media_type = source.get("data"), source.get("media_type")
    if kind == "base64" and isinstance(data, str):
        media_type = media_type if isinstance(media_type, str) else "application/pdf"
        return FilePart(data=data, media_type=media_type, name=title, extra=extra)
    if kind == "text" and isinstance(data, str):
        encoded = base64.b64encode(data.encode()).decode()
        return FilePart(data=encoded, media_type="text/plain", name=title, extra=extra)
    if kind == "url" and isinstance(source.get("url"), str):
        return FilePart(url=source["url"], name=title, extra=extra)
    if kind == "file" and isinstance(source.get("file_id"), str):
        return FilePart(file_id=source["file_id"], name=title, extra=extra)
    return NativePart(FAMILY, block)  # `content` sources: Anthropic-only


def _part(block: JsonObject) -> Part:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return TextPart(block["text"], _extra(block))
    if kind == "image":
        return _image(block)
    if kind == "document":
        return _document(block)
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        signature = block.get("signature")
        return ThinkingPart(block["thinking"], signature if isinstance(signature, str) else None)
    if kind == "redacted_thinking" and isinstance(block.get("data"), str):
        return ThinkingPart(signature=block["data"], redacted=True)
    return NativePart(FAMILY, block)  # search results, server tool blocks, …


def _parts(content: str | list[JsonObject]) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    return [_part(b) for b in content]


def _messages(role: Role, content: str | list[JsonObject]) -> list[Message]:
    """One Messages turn as canonical messages: tool results first (as `tool` messages), then
    the turn's own content; assistant `tool_use` blocks become its `tool_calls`."""
    if isinstance(content, str):
        return [Message(role, _parts(content))]
    out: list[Message] = []
    own = Message(role)
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            result = block.get("content")
            parts = _parts(result) if isinstance(result, str | list) else []
            call_id = block.get("tool_use_id")
            out.append(
                Message(
                    "tool",
                    parts,
                    tool_call_id=call_id if isinstance(call_id, str) else "",
                    is_error=block.get("is_error") is True,
                )
            )
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            own.tool_calls.append(
                ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), arguments)
            )
        else:
            own.content.append(_part(block))
    if own.content or own.tool_calls or not out:
        out.append(own)
    return out


def _tools(raw: Any, dropped: list[str]) -> list[Tool]:
    tools: list[Tool] = []
    for tool in raw or ():
        schema = tool.get("input_schema")
        if not isinstance(tool.get("name"), str) or not isinstance(schema, dict):
            dropped.append(f"tool:{tool.get('type') or 'unknown'}")  # server tools
            continue
        description = tool.get("description")
        extra = {k: tool[k] for k in ("cache_control",) if k in tool}
        tools.append(
            Tool(tool["name"], description if isinstance(description, str) else None, schema, extra)
        )
    return tools


def _tool_choice(raw: Any) -> tuple[ToolChoice | None, bool | None]:
    if not isinstance(raw, dict):
        return None, None
    kind = raw.get("type")
    parallel = False if raw.get("disable_parallel_tool_use") is True else None
    choice: ToolChoice | None = None
    if kind == "any":
        choice = "required"
    elif kind == "tool" and isinstance(raw.get("name"), str):
        choice = NamedTool(raw["name"])
    elif kind in ("auto", "none"):
        choice = "auto" if kind == "auto" else "none"
    return choice, parallel


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def to_canonical(body: JsonObject) -> ChatRequest:
    """A checked Messages body as a canonical request (unknown fields kept in `extra`)."""
    # one system message per block: the parts stay separate paragraphs in every family
    messages = [Message("system", [part]) for part in _parts(body.get("system") or "")]
    for message in body["messages"]:
        messages.extend(_messages(message["role"], message["content"]))
    choice, parallel = _tool_choice(body.get("tool_choice"))
    top_k = body.get("top_k")
    thinking = body.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    request = ChatRequest(
        model=body["model"],
        messages=messages,
        stream=body.get("stream") is True,
        max_tokens=body["max_tokens"],
        temperature=_number(body.get("temperature")),
        top_p=_number(body.get("top_p")),
        top_k=top_k if isinstance(top_k, int) and not isinstance(top_k, bool) else None,
        stop=list(body.get("stop_sequences") or ()),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        thinking_budget=budget if isinstance(budget, int) and budget > 0 else None,
        extra={k: v for k, v in body.items() if k not in _CANONICAL_FIELDS},
        source_family=FAMILY,
    )
    request.tools = _tools(body.get("tools"), request.dropped)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        request.user = metadata["user_id"]
        if len(metadata) == 1:  # carried by `user`, not dropped for other families
            del request.extra["metadata"]
    return request


# --- canonical → Messages answers ------------------------------------------------------------


def _arguments(raw: str) -> Any:
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def content_json(message: Message, message_id: str) -> list[JsonObject]:
    content: list[JsonObject] = []
    for part in message.content:
        if isinstance(part, ThinkingPart):
            if part.redacted:
                content.append({"type": "redacted_thinking", "data": part.signature or ""})
            else:
                block = {
                    "type": "thinking",
                    "thinking": part.text,
                    "signature": part.signature or "",
                }
                content.append(block)
        elif isinstance(part, TextPart):
            if part.text:
                citations = part.extra.get("citations")
                text: JsonObject = {"type": "text", "text": part.text}
                if citations:
                    text["citations"] = citations
                content.append(text)
        elif isinstance(part, NativePart) and part.family == FAMILY:
            content.append(part.block)
    for call in message.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id or f"toolu_{message_id}_{len(content)}",
                "name": call.name,
                "input": _arguments(call.arguments),
            }
        )
    return content


def render(response: ChatResponse, alias: str, request_id: str) -> JsonObject:
    """The Messages answer for a translated attempt (contract §6.9)."""
    ident = message_id(request_id)
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": alias,
        "content": content_json(response.message, ident),
        "stop_reason": STOP_REASONS.get(response.finish_reason or "stop", "end_turn"),
        "stop_sequence": response.stop_sequence,
        "usage": usage_json(response.usage or Usage()),
    }


class MessagesInbound:
    """The Anthropic Messages client API as an `InboundCodec`."""

    name = "anthropic-messages"
    family = FAMILY
    endpoint: Endpoint = "messages"
    forward_headers: frozenset[bytes] = FORWARD_HEADERS

    def parse(self, raw: bytes) -> JsonObject:
        return parse_messages(raw)

    def to_canonical(self, body: JsonObject) -> ChatRequest:
        return to_canonical(body)

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: JsonObject
    ) -> JsonObject:
        return render(response, alias, request_id)

    def stream_encoder(self, alias: str, request_id: str, body: JsonObject) -> StreamEncoder:
        return MessagesEncoder(alias, request_id)  # Anthropic streams always carry usage

    def passthrough_stream(self, alias: str, body: JsonObject) -> StreamRelay:
        return PassthroughStream(alias)

    def passthrough_answer(self, body: JsonObject, alias: str) -> JsonObject:
        body["model"] = alias
        return body

    def error_body(self, err: GatewayError) -> bytes:
        return err.anthropic_body()


MESSAGES = MessagesInbound()
