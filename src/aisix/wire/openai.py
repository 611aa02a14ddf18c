"""The OpenAI chat wire family: the upstream codec and its stream decoder (contract §6.7, §7.3).

`CODEC` encodes a canonical request as an OpenAI chat body, decodes chat completions (a
malformed 200 is an `UpstreamDecodeError`, never a crash later), turns `chat.completion.chunk`
SSE into canonical events, and reads OpenAI error bodies and usage. The inbound side (what an
OpenAI client sends and receives) is `aisix.wire.openai_in`.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import UpstreamDecodeError, UpstreamError, openai_fault
from aisix.wire.base import FamilyCodec
from aisix.wire.sse import SSEDecoder
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    FilePart,
    Finish,
    FinishReason,
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
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    UpstreamFault,
    Usage,
    UsageReport,
)

FAMILY = "openai"
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def usage_of(data: Any) -> Usage | None:
    """An OpenAI `usage` object (clamped); None when absent or malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("prompt_tokens"), int):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    out_details = data.get("completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens", 0) if isinstance(out_details, dict) else 0
    return Usage.of(
        data["prompt_tokens"],
        data.get("completion_tokens", 0),
        cached,
        data.get("total_tokens"),
        reasoning=reasoning,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def parse_error(body: bytes) -> UpstreamFault:
    return openai_fault(body)


# --- canonical → OpenAI --------------------------------------------------------------------


def _part_json(part: Part, dropped: list[str]) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
        image: dict[str, Any] = {"url": url}
        if part.detail:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, FilePart):
        if part.file_id:
            return {"type": "file", "file": {"file_id": part.file_id}}
        if part.data:
            data = f"data:{part.media_type or 'application/pdf'};base64,{part.data}"
            file: dict[str, Any] = {"file_data": data}
            if part.name:
                file["filename"] = part.name
            return {"type": "file", "file": file}
        dropped.append("document")
        return None
    if isinstance(part, ThinkingPart):
        dropped.append("thinking")
        return None
    if isinstance(part, NativePart):
        if part.family == FAMILY:
            return part.block
        dropped.append(str(part.block.get("type") or "block"))
        return None
    return None


def _content_json(parts: list[Part], dropped: list[str]) -> str | list[dict[str, Any]] | None:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, TextPart)) if parts else None
    out = [j for p in parts if (j := _part_json(p, dropped)) is not None]
    if all(j.get("type") == "text" for j in out):
        return "".join(j["text"] for j in out) or None
    return out


def _message_json(message: Message, dropped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
        out["content"] = message.text()
        return out
    content = _content_json(message.content, dropped)
    if message.role == "assistant":
        out["content"] = content if content else None
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
    else:
        out["content"] = content if content is not None else ""
    if message.name:
        out["name"] = message.name
    return out


def encode_request(request: ChatRequest, model_name: str) -> dict[str, Any]:
    dropped = request.dropped
    body: dict[str, Any] = {}
    if request.source_family == FAMILY:
        body.update(request.extra)
    elif request.extra:
        dropped.extend(sorted(request.extra))
    body["model"] = model_name
    body["messages"] = [_message_json(m, dropped) for m in request.messages]
    if request.stream:
        body["stream"] = True
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "n", "seed", "user", "parallel_tool_calls"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.top_k is not None:
        dropped.append("top_k")
    if request.thinking_budget is not None and request.reasoning_effort is None:
        dropped.append("thinking")
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.stop:
        body["stop"] = list(request.stop)
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.tools:
        body["tools"] = [_tool_json(t) for t in request.tools]
    choice = request.tool_choice
    if isinstance(choice, NamedTool):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        body["tool_choice"] = choice
    return body


def _tool_json(tool: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


# --- OpenAI → canonical --------------------------------------------------------------------


def _bad(detail: str) -> UpstreamDecodeError:
    return UpstreamDecodeError(f"upstream returned a malformed chat completion: {detail}")


def _tool_calls(raw: Any) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("tool_calls is not an array")
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"tool_calls[{i}] has no function name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        elif not isinstance(arguments, str):
            arguments = "{}"
        call_id = call.get("id")
        calls.append(
            ToolCall(call_id if isinstance(call_id, str) else "", function["name"], arguments)
        )
    return calls


def finish_reason(raw: Any) -> FinishReason | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _bad("finish_reason is not a string")
    return FINISH_REASONS.get(raw, "stop")


def decode_response(body: dict[str, Any]) -> ChatResponse:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _bad("choices[0].message is not an object")
    content: list[Part] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append(ThinkingPart(text=reasoning))
    text = message.get("content")
    if isinstance(text, str):
        if text:
            content.append(TextPart(text))
    elif text is not None:
        raise _bad("choices[0].message.content is not a string")
    canonical = Message("assistant", content, _tool_calls(message.get("tool_calls")))
    created = body.get("created")
    return ChatResponse(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        message=canonical,
        finish_reason=finish_reason(choice.get("finish_reason")),
        usage=usage_of(body.get("usage")),
        created=created if isinstance(created, int) else 0,
    )


class StreamDecoder:
    """`chat.completion.chunk` SSE → canonical events."""

    __slots__ = ("_sse", "_started", "done")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self.done = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for payload in self._sse.payloads(data):
            self._payload(payload, out)
        return out

    def end(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for payload in self._sse.flush_payloads():
            self._payload(payload, out)
        return out

    def _payload(self, payload: bytes, out: list[StreamEvent]) -> None:
        if self.done:
            return
        if payload == b"[DONE]":
            self.done = True
            return
        chunk = load_chunk(payload)
        if not self._started:
            self._started = True
            out.append(StreamStart(str(chunk.get("id") or ""), str(chunk.get("model") or "")))
        usage = usage_of(chunk.get("usage"))
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _delta_events(delta, out)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                out.append(Finish(FINISH_REASONS.get(reason, "stop")))
        if usage is not None:
            out.append(UsageReport(usage))


def load_chunk(payload: bytes) -> dict[str, Any]:
    """One stream payload as an object; an error object is the upstream's failure."""
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
    return chunk


def _delta_events(delta: dict[str, Any], out: list[StreamEvent]) -> None:
    reasoning = delta.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        out.append(ThinkingDelta(reasoning))
    text = delta.get("content")
    if isinstance(text, str) and text:
        out.append(TextDelta(text))
    calls = delta.get("tool_calls")
    if not isinstance(calls, list):
        return
    for call in calls:
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if isinstance(call.get("id"), str) or isinstance(name, str):
            out.append(ToolCallStart(index, str(call.get("id") or ""), str(name or "")))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(ToolCallDelta(index, arguments))


CODEC = FamilyCodec(
    family=FAMILY,
    encode_request=encode_request,
    decode_response=decode_response,
    stream_decoder=StreamDecoder,
    parse_error=parse_error,
    read_usage=usage_of,
)
