"""The Anthropic family as an upstream: canonical chat ↔ Messages API (contract §7.3).

`encode_request`: system/developer messages → top-level `system`; parts → content blocks
(images and documents by base64 or URL); assistant `tool_calls` → `tool_use`; `tool` messages
→ `tool_result` blocks, consecutive results (and the user text after them) merged into one
user turn; tools → `input_schema`; `tool_choice` auto/required/named/none; `max_tokens`
default 4096; `thinking` from `thinking_budget` or `reasoning_effort`; `n > 1` is a 400.
Whatever has no Anthropic equivalent is named in `request.dropped`. `decode_response` and
`StreamDecoder` read answers and SSE into canonical structs and events.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from aisix.errors import UpstreamDecodeError, UpstreamError
from aisix.wire.anthropic.common import (
    FAMILY,
    UsageTally,
    finish_reason,
    load_event,
    parse_error,
    stream_error,
    usage_of,
)
from aisix.wire.base import FamilyCodec
from aisix.wire.request import invalid
from aisix.wire.sse import SSEDecoder, SSEEvent
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    FilePart,
    Finish,
    ImagePart,
    Message,
    NamedTool,
    NativePart,
    Part,
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
    UsageReport,
)

#: `max_tokens` when the chat request set none (the Messages API requires it)
DEFAULT_MAX_TOKENS = 4096
#: the smallest `thinking.budget_tokens` Anthropic accepts
MIN_THINKING_BUDGET = 1024
#: thinking budget per OpenAI `reasoning_effort` (LiteLLM's figures, so clients see the same)
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}

JsonObject = dict[str, Any]


# --- canonical → Anthropic -------------------------------------------------------------------


def _with_extra(block: JsonObject, extra: dict[str, Any]) -> JsonObject:
    if extra:
        block.update(extra)
    return block


def _source(data: str | None, media_type: str | None, url: str | None) -> JsonObject | None:
    if data:
        return {"type": "base64", "media_type": media_type or "image/png", "data": data}
    if url:
        if url.startswith("data:") and ";base64," in url:
            kind, _, payload = url[5:].partition(";base64,")
            return {"type": "base64", "media_type": kind or "image/png", "data": payload}
        return {"type": "url", "url": url}
    return None


def _document(part: FilePart, dropped: list[str]) -> JsonObject | None:
    source: JsonObject | None
    if part.file_id:
        source = {"type": "file", "file_id": part.file_id}
    elif part.data and (part.media_type or "").startswith("text/"):
        try:
            text = base64.b64decode(part.data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            dropped.append("document")
            return None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    elif part.data:
        media_type = part.media_type or "application/pdf"
        source = {"type": "base64", "media_type": media_type, "data": part.data}
    elif part.url:
        source = {"type": "url", "url": part.url}
    else:
        dropped.append("document")
        return None
    block: JsonObject = {"type": "document", "source": source}
    if part.name:
        block["title"] = part.name
    return _with_extra(block, part.extra)


def _block(part: Part, dropped: list[str]) -> JsonObject | None:
    if isinstance(part, TextPart):
        return _with_extra({"type": "text", "text": part.text}, part.extra)
    if isinstance(part, ImagePart):
        source = _source(part.data, part.media_type, part.url)
        if source is None:
            dropped.append("image")
            return None
        if part.detail:
            dropped.append("image_detail")
        return _with_extra({"type": "image", "source": source}, part.extra)
    if isinstance(part, FilePart):
        return _document(part, dropped)
    if isinstance(part, ThinkingPart):
        if part.redacted and part.signature:
            return {"type": "redacted_thinking", "data": part.signature}
        if part.signature:
            return {"type": "thinking", "thinking": part.text, "signature": part.signature}
        dropped.append("thinking")  # unsigned reasoning (another family's) is refused upstream
        return None
    if part.family == FAMILY:
        return part.block
    dropped.append(str(part.block.get("type") or "block"))
    return None


def _blocks(parts: list[Part], dropped: list[str]) -> list[JsonObject]:
    return [b for p in parts if (b := _block(p, dropped)) is not None]


def _content(parts: list[Part], dropped: list[str]) -> str | list[JsonObject]:
    """A plain string when the parts are only plain text, else content blocks."""
    if all(isinstance(p, TextPart) and not p.extra for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart))
    return _blocks(parts, dropped)


def _arguments(raw: str) -> Any:
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_result(message: Message, dropped: list[str]) -> JsonObject:
    block: JsonObject = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
    content = _content(message.content, dropped)
    if content:
        block["content"] = content
    if message.is_error:
        block["is_error"] = True
    return block


def _as_blocks(content: str | list[JsonObject]) -> list[JsonObject]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _system(messages: list[Message], dropped: list[str]) -> str | list[JsonObject] | None:
    parts = [p for m in messages if m.role == "system" for p in m.content]
    if not parts:
        return None
    if all(isinstance(p, TextPart) and not p.extra for p in parts):
        texts = [m.text() for m in messages if m.role == "system"]
        return "\n\n".join(t for t in texts if t)
    blocks = []
    for part in parts:
        if isinstance(part, TextPart):
            blocks.append(_with_extra({"type": "text", "text": part.text}, part.extra))
        else:
            dropped.append("system_" + type(part).__name__.removesuffix("Part").lower())
    return blocks


def _turns(messages: list[Message], dropped: list[str]) -> list[JsonObject]:
    """Non-system messages as Messages turns; tool results join the user turn they open."""
    out: list[JsonObject] = []
    open_results: list[JsonObject] | None = None  # the user turn the last tool results built
    for message in messages:
        if message.role == "system":
            continue
        if message.name:
            dropped.append("name")
        if message.role == "tool":
            if open_results is None:
                open_results = []
                out.append({"role": "user", "content": open_results})
            open_results.append(_tool_result(message, dropped))
            continue
        if message.role == "user":
            content = _content(message.content, dropped)
            if open_results is not None:
                open_results.extend(_as_blocks(content))
            else:
                out.append({"role": "user", "content": content})
            open_results = None
            continue
        open_results = None
        blocks = _blocks(message.content, dropped)
        for call in message.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": _arguments(call.arguments),
                }
            )
        if all(b.get("type") == "text" and len(b) == 2 for b in blocks):
            out.append({"role": "assistant", "content": "".join(b["text"] for b in blocks)})
        else:
            out.append({"role": "assistant", "content": blocks})
    return out


def _tool_json(tool: Tool) -> JsonObject:
    out: JsonObject = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    return _with_extra(out, tool.extra)


def _tool_choice(request: ChatRequest) -> JsonObject | None:
    choice = request.tool_choice
    out: JsonObject | None
    if isinstance(choice, NamedTool):
        out = {"type": "tool", "name": choice.name}
    elif choice == "required":
        out = {"type": "any"}
    elif choice is not None:
        out = {"type": choice}
    else:
        out = None
    if request.parallel_tool_calls is False and request.tools and choice != "none":
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def _thinking_budget(request: ChatRequest) -> int | None:
    if request.thinking_budget is not None:
        return request.thinking_budget if request.thinking_budget > 0 else None
    if request.reasoning_effort is not None:
        return EFFORT_BUDGETS.get(request.reasoning_effort)
    return None


def encode_request(request: ChatRequest, model_name: str) -> JsonObject:
    """The Messages body for a canonical request; drops are named in `request.dropped`."""
    if request.n is not None and request.n > 1:
        raise invalid('"n" greater than 1 is not supported by this model', "n")
    dropped = request.dropped
    body: JsonObject = {}
    if request.source_family == FAMILY:
        body.update(request.extra)
    elif request.extra:
        dropped.extend(sorted(request.extra))
    body["model"] = model_name
    system = _system(request.messages, dropped)
    if system:
        body["system"] = system
    body["messages"] = _turns(request.messages, dropped)
    max_tokens = request.max_tokens
    budget = _thinking_budget(request)
    if budget is not None:
        if max_tokens is None:  # no cap asked for: thinking comes on top of the default answer
            max_tokens = DEFAULT_MAX_TOKENS + budget
        # `max_tokens` caps thinking and answer together (as OpenAI's does reasoning), and
        # Anthropic wants budget < max_tokens and budget >= 1024
        budget = min(budget, max_tokens - 1)
        if budget >= MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        else:
            dropped.append("thinking")
    body["max_tokens"] = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS
    if request.stream:
        body["stream"] = True
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [_tool_json(t) for t in request.tools]
    choice = _tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if request.user:
        body["metadata"] = {**body.get("metadata", {}), "user_id": request.user}
    if request.response_format is not None:
        dropped.append("response_format")
    if request.seed is not None:
        dropped.append("seed")
    return body


# --- Anthropic → canonical -------------------------------------------------------------------


def _bad(detail: str) -> UpstreamDecodeError:
    return UpstreamDecodeError(f"upstream returned a malformed message: {detail}")


def _string(block: JsonObject, name: str, i: int) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise _bad(f"content[{i}].{name} is not a string")
    return value


def decode_response(body: JsonObject) -> ChatResponse:
    """A Messages answer as a canonical response; a malformed one is `UpstreamDecodeError`."""
    blocks = body.get("content")
    if not isinstance(blocks, list):
        raise _bad("content is not an array")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _bad(f"content[{i}] is not an object")
        kind = block.get("type")
        if kind == "text":
            citations = block.get("citations")
            extra = {"citations": citations} if citations else {}
            parts.append(TextPart(_string(block, "text", i), extra))
        elif kind == "thinking":
            signature = block.get("signature")
            parts.append(
                ThinkingPart(
                    _string(block, "thinking", i),
                    signature if isinstance(signature, str) else None,
                )
            )
        elif kind == "redacted_thinking":
            parts.append(ThinkingPart(signature=_string(block, "data", i), redacted=True))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(ToolCall(_string(block, "id", i), _string(block, "name", i), arguments))
        else:  # server tool use and results, containers, …: Anthropic-only
            parts.append(NativePart(FAMILY, block))
    stop_sequence = body.get("stop_sequence")
    return ChatResponse(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        message=Message("assistant", parts, calls),
        finish_reason=finish_reason(body.get("stop_reason")),
        usage=usage_of(body.get("usage")),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
    )


class StreamDecoder:
    """Anthropic SSE → canonical events (`ping` ignored, `message_stop` ends)."""

    __slots__ = ("_failed", "_sse", "_tally", "_tools", "done")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._tally = UsageTally()
        self._tools: dict[int, int] = {}  # content block index → tool call index
        self._failed: UpstreamError | None = None
        self.done = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        return self._events(self._sse.feed(data))

    def end(self) -> list[StreamEvent]:
        return self._events(self._sse.flush())

    def _events(self, frames: list[SSEEvent]) -> list[StreamEvent]:
        """The frames' events; an `event: error` raises, after the events before it in the
        same read have been returned (then on the next read)."""
        if self._failed is not None:
            raise self._failed
        out: list[StreamEvent] = []
        for frame in frames:
            try:
                self._event(frame.event, frame.data, out)
            except UpstreamError as err:
                if not out or isinstance(err, UpstreamDecodeError):
                    raise
                self._failed = err
                break
        return out

    def _event(self, name: str | None, data: bytes, out: list[StreamEvent]) -> None:
        if self.done:
            return
        payload = load_event(data)
        kind = name or payload.get("type")
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._start(payload, out)
        elif kind == "message_start":
            message = payload.get("message")
            message = message if isinstance(message, dict) else {}
            usage = self._tally.add(message.get("usage"))
            out.append(
                StreamStart(str(message.get("id") or ""), str(message.get("model") or ""), usage)
            )
        elif kind == "message_delta":
            delta = payload.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            reason = finish_reason(delta.get("stop_reason"))
            if reason is not None:
                sequence = delta.get("stop_sequence")
                out.append(Finish(reason, sequence if isinstance(sequence, str) else None))
            usage = self._tally.add(payload.get("usage"))
            if usage is not None:
                out.append(UsageReport(usage))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise stream_error(payload)
        # ping, content_block_stop and future event kinds carry nothing to translate

    @staticmethod
    def _index(payload: JsonObject) -> int:
        index = payload.get("index")
        if not isinstance(index, int):
            raise UpstreamDecodeError("upstream sent a content block event without an index")
        return index

    def _start(self, payload: JsonObject, out: list[StreamEvent]) -> None:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            raise UpstreamDecodeError("upstream sent content_block_start without a block")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            out.append(TextDelta(block["text"]))
        elif kind == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            out.append(ThinkingDelta(block["thinking"]))
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            out.append(ThinkingDelta(signature=block["data"], redacted=True))
        elif kind == "tool_use":
            tool = len(self._tools)
            self._tools[self._index(payload)] = tool
            out.append(
                ToolCallStart(tool, str(block.get("id") or ""), str(block.get("name") or ""))
            )
            if block.get("input"):
                out.append(ToolCallDelta(tool, orjson.dumps(block["input"]).decode()))

    def _delta(self, payload: JsonObject, out: list[StreamEvent]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            raise UpstreamDecodeError("upstream sent content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            tool = self._tools.get(self._index(payload))
            if tool is not None and isinstance(fragment, str) and fragment:
                out.append(ToolCallDelta(tool, fragment))
        elif kind == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                out.append(ThinkingDelta(text))
        elif kind == "signature_delta":
            signature = delta.get("signature")
            if isinstance(signature, str) and signature:
                out.append(ThinkingDelta(signature=signature))


CODEC = FamilyCodec(
    family=FAMILY,
    encode_request=encode_request,
    decode_response=decode_response,
    stream_decoder=StreamDecoder,
    parse_error=parse_error,
    read_usage=usage_of,
)
