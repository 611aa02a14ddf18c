"""AWS Bedrock's Converse API as a wire family (contract §7.3, column "bedrock Converse").

`CODEC` encodes a canonical request as a Converse body (`system`, alternating `messages` with
text / image / document / toolUse / toolResult / reasoningContent blocks, `inferenceConfig`,
`toolConfig`), decodes Converse answers (stop reasons: `end_turn` / `stop_sequence` → stop,
`max_tokens` → length, `tool_use` → tool_calls, `guardrail_intervened` / `content_filtered` →
content_filter; usage incl. cache reads and writes), decodes ConverseStream's AWS event-stream
frames through botocore's parser (prelude and message CRCs checked: a corrupt frame is a
mid-stream error), and serves embeddings through InvokeModel for Titan and Cohere models.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import InvalidRequest, UpstreamDecodeError, UpstreamError
from aisix.wire.base import EmbeddingFamilyCodec
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
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

FAMILY = "bedrock"
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOC_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}


def usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("inputTokens"), int):
        return None
    read = raw.get("cacheReadInputTokens", 0)
    write = raw.get("cacheWriteInputTokens", 0)
    prompt = raw["inputTokens"] + (read if isinstance(read, int) else 0)
    prompt += write if isinstance(write, int) else 0
    return Usage.of(prompt, raw.get("outputTokens", 0), read, None, cache_creation=write)


# --- canonical → Converse ------------------------------------------------------------------


def _block(part: Part, dropped: list[str]) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        fmt = _IMAGE_FORMATS.get(part.media_type or "")
        if part.data is None or fmt is None:
            dropped.append("image_url")  # Converse takes inline bytes (or S3), not URLs
            return None
        return {"image": {"format": fmt, "source": {"bytes": part.data}}}
    if isinstance(part, FilePart):
        fmt = _DOC_FORMATS.get(part.media_type or "")
        if part.data is None or fmt is None:
            dropped.append("document")
            return None
        name = "".join(c for c in (part.name or "document") if c.isalnum() or c in " -()[]")
        return {
            "document": {"format": fmt, "name": name or "document", "source": {"bytes": part.data}}
        }
    if isinstance(part, ThinkingPart):
        if part.redacted:
            return {"reasoningContent": {"redactedContent": part.signature or ""}}
        text: dict[str, Any] = {"text": part.text}
        if part.signature:
            text["signature"] = part.signature
        return {"reasoningContent": {"reasoningText": text}}
    if isinstance(part, NativePart):
        if part.family == FAMILY:
            return part.block
        dropped.append(str(part.block.get("type") or "block"))
    return None


def _arguments(raw: str) -> Any:
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _turns(
    messages: list[Message], dropped: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user/assistant messages; same-role turns merged)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.extend({"text": p.text} for p in message.content if isinstance(p, TextPart))
            continue
        if message.role == "tool":
            result = {
                "toolUseId": message.tool_call_id or "",
                "content": [{"text": message.text()}],
                "status": "error" if message.is_error else "success",
            }
            role, blocks = "user", [{"toolResult": result}]
        else:
            role = message.role
            blocks = [b for p in message.content if (b := _block(p, dropped)) is not None]
            for call in message.tool_calls:
                use = {"toolUseId": call.id, "name": call.name, "input": _arguments(call.arguments)}
                blocks.append({"toolUse": use})
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def encode_request(request: ChatRequest, model_name: str) -> dict[str, Any]:
    if request.n is not None and request.n > 1:
        raise InvalidRequest(
            'request payload is invalid: "n" greater than 1 is not supported', param="n"
        )
    dropped = request.dropped
    system, turns = _turns(request.messages, dropped)
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if config:
        body["inferenceConfig"] = config
    extra: dict[str, Any] = {}
    if request.top_k is not None:
        extra["top_k"] = request.top_k
    if request.thinking_budget is not None:
        extra["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
    if extra:
        body["additionalModelRequestFields"] = extra
    if request.tools and request.tool_choice != "none":
        tools = [
            {
                "toolSpec": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "inputSchema": {"json": t.parameters},
                }
            }
            for t in request.tools
        ]
        tool_config: dict[str, Any] = {"tools": tools}
        choice = request.tool_choice
        if isinstance(choice, NamedTool):
            tool_config["toolChoice"] = {"tool": {"name": choice.name}}
        elif choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = tool_config
    if request.response_format is not None:
        dropped.append("response_format")
    if request.reasoning_effort is not None and request.thinking_budget is None:
        dropped.append("reasoning_effort")
    if request.source_family == FAMILY:
        body.update(request.extra)
    elif request.extra:
        dropped.extend(sorted(request.extra))
    return body


# --- Converse → canonical ------------------------------------------------------------------


def _bad(detail: str) -> UpstreamDecodeError:
    return UpstreamDecodeError(f"upstream returned a malformed Converse answer: {detail}")


def decode_response(body: dict[str, Any]) -> ChatResponse:
    output = body.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise _bad("no output.message.content")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            raise _bad("a content block is not an object")
        if isinstance(block.get("text"), str):
            parts.append(TextPart(block["text"]))
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(
                ToolCall(
                    str(use.get("toolUseId") or ""),
                    str(use.get("name") or ""),
                    orjson.dumps(use.get("input") or {}).decode(),
                )
            )
        elif isinstance(block.get("reasoningContent"), dict):
            parts.append(_thinking(block["reasoningContent"]))
    reason = body.get("stopReason")
    if reason is not None and not isinstance(reason, str):
        raise _bad("stopReason is not a string")
    return ChatResponse(
        id="",
        model="",
        message=Message("assistant", parts, calls),
        finish_reason=STOP_REASONS.get(reason or "end_turn", "stop"),
        usage=usage_of(body.get("usage")),
    )


def _thinking(raw: dict[str, Any]) -> ThinkingPart:
    text = raw.get("reasoningText")
    if isinstance(text, dict):
        signature = text.get("signature")
        return ThinkingPart(
            str(text.get("text") or ""), signature if isinstance(signature, str) else None
        )
    redacted = raw.get("redactedContent")
    return ThinkingPart("", redacted if isinstance(redacted, str) else None, redacted=True)


def parse_error(body: bytes) -> UpstreamFault:
    """AWS error JSON: `{"message": ...}` (or `Message`), type in `__type` (or the header)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamFault()
    if not isinstance(parsed, dict):
        return UpstreamFault()
    message = parsed.get("message") or parsed.get("Message")
    kind = parsed.get("__type")
    kind = kind.rsplit("#", 1)[-1].split(":", 1)[0] if isinstance(kind, str) else None
    return UpstreamFault(
        message=message if isinstance(message, str) else None, code=kind, type=kind
    )


class StreamDecoder:
    """ConverseStream event-stream frames → canonical events (botocore checks the CRCs)."""

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()
        self._started = False
        self._tools: dict[int, int] = {}  # content block index → tool call index
        self.done = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        from botocore.eventstream import ParserError

        out: list[StreamEvent] = []
        self._buffer.add_data(data)
        try:
            for message in self._buffer:
                self._message(message.headers, message.payload, out)
        except ParserError as err:
            raise UpstreamDecodeError(
                f"upstream sent a corrupt event-stream frame: {err}"
            ) from None
        return out

    def end(self) -> list[StreamEvent]:
        return []

    def _message(self, headers: dict[str, Any], payload: bytes, out: list[StreamEvent]) -> None:
        kind = headers.get(":message-type")
        if kind == "exception" or kind == "error":
            name = headers.get(":exception-type") or headers.get(":error-code") or "error"
            try:
                detail = orjson.loads(payload).get("message")
            except (orjson.JSONDecodeError, AttributeError):
                detail = None
            raise UpstreamError(f"upstream stream error ({name}): {detail or 'no message'}")
        event = headers.get(":event-type")
        try:
            data: Any = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise UpstreamDecodeError("upstream sent an event that is not valid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamDecodeError("upstream sent an event that is not an object")
        if not self._started:
            self._started = True
            out.append(StreamStart())
        if event == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                index = len(self._tools)
                self._tools[_int(data.get("contentBlockIndex"))] = index
                out.append(
                    ToolCallStart(
                        index, str(use.get("toolUseId") or ""), str(use.get("name") or "")
                    )
                )
        elif event == "contentBlockDelta":
            self._delta(data, out)
        elif event == "messageStop":
            reason = data.get("stopReason")
            out.append(Finish(STOP_REASONS.get(reason if isinstance(reason, str) else "", "stop")))
        elif event == "metadata":
            usage = usage_of(data.get("usage"))
            if usage is not None:
                out.append(UsageReport(usage))
            self.done = True

    def _delta(self, data: dict[str, Any], out: list[StreamEvent]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("text"), str):
            out.append(TextDelta(delta["text"]))
        elif isinstance(delta.get("toolUse"), dict):
            fragment = delta["toolUse"].get("input")
            index = self._tools.get(_int(data.get("contentBlockIndex")))
            if isinstance(fragment, str) and index is not None:
                out.append(ToolCallDelta(index, fragment))
        elif isinstance(delta.get("reasoningContent"), dict):
            reasoning = delta["reasoningContent"]
            text = reasoning.get("text")
            signature = reasoning.get("signature")
            out.append(
                ThinkingDelta(
                    text if isinstance(text, str) else "",
                    signature if isinstance(signature, str) else None,
                )
            )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


# --- embeddings (InvokeModel) --------------------------------------------------------------


def encode_embeddings(request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
    if model_name.startswith("cohere."):
        return {"texts": request.inputs, "input_type": "search_document"}
    if len(request.inputs) != 1:
        raise InvalidRequest(
            "request payload is invalid: this embedding model takes one input per request",
            param="input",
        )
    body: dict[str, Any] = {"inputText": request.inputs[0]}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def decode_embeddings(body: dict[str, Any]) -> EmbeddingResponse:
    if isinstance(body.get("embedding"), list):  # Titan
        tokens = body.get("inputTextTokenCount", 0)
        return EmbeddingResponse([_vector(body["embedding"])], Usage.of(tokens, 0))
    embeddings = body.get("embeddings")
    if isinstance(embeddings, dict):  # Cohere with embedding_types
        embeddings = embeddings.get("float")
    if isinstance(embeddings, list):
        return EmbeddingResponse([_vector(v) for v in embeddings], None)
    raise UpstreamDecodeError("upstream returned an embeddings answer without vectors")


def _vector(raw: Any) -> list[float]:
    if not isinstance(raw, list) or not all(isinstance(x, int | float) for x in raw):
        raise UpstreamDecodeError("upstream returned an embedding that is not a list of numbers")
    return [float(x) for x in raw]


CODEC = EmbeddingFamilyCodec(
    family=FAMILY,
    encode_request=encode_request,
    decode_response=decode_response,
    stream_decoder=StreamDecoder,
    parse_error=parse_error,
    read_usage=usage_of,
    encode_embeddings=encode_embeddings,
    decode_embeddings=decode_embeddings,
)
