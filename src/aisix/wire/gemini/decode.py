"""Gemini answers → canonical: `generateContent` bodies, `alt=sse` chunks, errors, embeddings.

A candidate's parts become text, `ThinkingPart`s (`thought: true`), tool calls (`call_<hex>`
ids synthesised where Gemini gives none; a `thoughtSignature` rides in the id, see
`encode.THOUGHT_MARK`) and inline images. Finish reasons and `usageMetadata` are mapped per
contract §7.3 (thought tokens count as completion and reasoning tokens, cached content as
cached tokens). Each stream chunk is a whole `GenerateContentResponse`; the stream has no end
marker, so it is done at EOF once a finishReason was seen. Malformed bodies raise
`UpstreamDecodeError`; an error object in a stream raises the `UpstreamError` its code names.
"""

from __future__ import annotations

import re
from random import getrandbits
from typing import Any

import orjson

from aisix.errors import UpstreamDecodeError, UpstreamError, upstream_status_error
from aisix.wire.gemini.encode import FAMILY, THOUGHT_MARK
from aisix.wire.sse import SSEDecoder
from aisix.wire.types import (
    ChatResponse,
    EmbeddingResponse,
    FilePart,
    Finish,
    FinishReason,
    ImagePart,
    Message,
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

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def new_call_id() -> str:
    return f"call_{getrandbits(96):024x}"


def finish_reason(raw: Any, has_calls: bool) -> FinishReason | None:
    """A Gemini finishReason; a function call ends the turn with `tool_calls`."""
    if not isinstance(raw, str) or not raw:
        return None
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def usage_of(meta: Any) -> Usage | None:
    """`usageMetadata` (clamped); None when absent. Thought tokens are generated tokens."""
    if not isinstance(meta, dict) or not meta:
        return None
    thoughts = meta.get("thoughtsTokenCount", 0)
    candidates = meta.get("candidatesTokenCount", 0)
    completion = (candidates if isinstance(candidates, int) else 0) + (
        thoughts if isinstance(thoughts, int) and thoughts > 0 else 0
    )
    return Usage.of(
        meta.get("promptTokenCount", 0),
        completion,
        meta.get("cachedContentTokenCount", 0),
        meta.get("totalTokenCount"),
        reasoning=thoughts,
    )


def _error_object(parsed: Any) -> dict[str, Any] | None:
    if isinstance(parsed, list) and parsed:  # Vertex stream errors come as a one-item array
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else None


def parse_error(body: bytes) -> UpstreamFault:
    """`{"error": {"code", "status", "message", "details"?}}`; `code` is the RPC status."""
    try:
        error = _error_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return UpstreamFault()
    if error is None:
        return UpstreamFault()
    message, status, code = error.get("message"), error.get("status"), error.get("code")
    return UpstreamFault(
        message=message if isinstance(message, str) and message else None,
        code=status if isinstance(status, str) else (str(code) if code is not None else None),
        type=status if isinstance(status, str) else None,
        retry_after=retry_delay(body),
    )


def retry_delay(body: bytes) -> float | None:
    """Seconds of a `google.rpc.RetryInfo` detail (`"retryDelay": "36s"`), if present."""
    try:
        error = _error_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None
    details = error.get("details") if error else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = _DURATION.match(delay) if isinstance(delay, str) else None
        if match:
            return float(match.group(1))
    return None


# --- answers ---------------------------------------------------------------------------------


def _bad(detail: str) -> UpstreamDecodeError:
    return UpstreamDecodeError(f"upstream returned a malformed gemini answer: {detail}")


def _tool_call(call: Any, signature: Any) -> ToolCall:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise _bad("functionCall has no name")
    args = call.get("args")
    call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
    call_id = call_id or new_call_id()
    if isinstance(signature, str) and signature:
        call_id = f"{call_id}{THOUGHT_MARK}{signature}"
    arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
    return ToolCall(call_id, call["name"], arguments)


def _inline(data: Any) -> Part:
    if not isinstance(data, dict) or not isinstance(data.get("data"), str):
        raise _bad("inlineData has no data")
    mime = data.get("mimeType") if isinstance(data.get("mimeType"), str) else None
    if mime is not None and mime.startswith("image/"):
        return ImagePart(data=data["data"], media_type=mime)
    return FilePart(data=data["data"], media_type=mime)


def _parts(raw: Any, content: list[Part], calls: list[ToolCall]) -> None:
    if not isinstance(raw, list):
        raise _bad("content.parts is not an array")
    for part in raw:
        if not isinstance(part, dict):
            raise _bad("a part is not an object")
        text = part.get("text")
        if isinstance(text, str):
            if part.get("thought") is True:
                signature = part.get("thoughtSignature")
                sig = signature if isinstance(signature, str) else None
                content.append(ThinkingPart(text=text, signature=sig))
            elif text:
                content.append(TextPart(text))
        elif "functionCall" in part:
            calls.append(_tool_call(part["functionCall"], part.get("thoughtSignature")))
        elif "inlineData" in part:
            content.append(_inline(part["inlineData"]))
        elif "fileData" in part and isinstance(part["fileData"], dict):
            uri, mime = part["fileData"].get("fileUri"), part["fileData"].get("mimeType")
            content.append(ImagePart(url=str(uri or ""), media_type=mime))
        elif set(part) - {"thoughtSignature"}:
            content.append(NativePart(FAMILY, part))


def _candidate(body: dict[str, Any]) -> dict[str, Any] | None:
    candidates = body.get("candidates")
    if candidates is None or candidates == []:
        return None
    if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        raise _bad("candidates is not an array of objects")
    return candidates[0]


def _blocked(body: dict[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def decode_response(body: dict[str, Any]) -> ChatResponse:
    usage = usage_of(body.get("usageMetadata"))
    response_id = str(body.get("responseId") or "")
    model = str(body.get("modelVersion") or "")
    candidate = _candidate(body)
    if candidate is None:
        if _blocked(body):  # the prompt itself was blocked: no candidates at all
            return ChatResponse(response_id, model, Message("assistant"), "content_filter", usage)
        raise _bad("no candidates")
    content: list[Part] = []
    calls: list[ToolCall] = []
    raw = candidate.get("content")
    if isinstance(raw, dict) and "parts" in raw:
        _parts(raw["parts"], content, calls)
    elif raw is not None and not isinstance(raw, dict):
        raise _bad("candidates[0].content is not an object")
    reason = finish_reason(candidate.get("finishReason"), bool(calls))
    message = Message("assistant", content, calls)
    return ChatResponse(response_id, model, message, reason or "stop", usage)


# --- streams ---------------------------------------------------------------------------------


def _stream_error(error: dict[str, Any]) -> UpstreamError:
    code = error.get("code")
    body = orjson.dumps({"error": error})
    if isinstance(code, int) and 400 <= code <= 599:
        return upstream_status_error(code, body, None)
    message = error.get("message")
    return UpstreamError(message if isinstance(message, str) else "upstream stream error")


class StreamDecoder:
    """`streamGenerateContent?alt=sse` chunks → canonical events."""

    __slots__ = ("_calls", "_finished", "_sse", "_started", "_usage", "done")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self._calls = 0
        self._finished = False
        self._usage: Usage | None = None
        self.done = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for payload in self._sse.payloads(data):
            self._chunk(payload, out)
        return out

    def end(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for payload in self._sse.flush_payloads():
            self._chunk(payload, out)
        if not self._finished:
            raise UpstreamDecodeError("upstream ended the stream before a finishReason")
        self.done = True
        return out

    def _chunk(self, payload: bytes, out: list[StreamEvent]) -> None:
        try:
            chunk: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamDecodeError("upstream sent a chunk that is not valid JSON") from None
        error = _error_object(chunk)
        if error is not None:
            raise _stream_error(error)
        if not isinstance(chunk, dict):
            raise UpstreamDecodeError("upstream sent a stream chunk that is not an object")
        if not self._started:
            self._started = True
            out.append(StreamStart(str(chunk.get("responseId") or ""), ""))
        candidate = _candidate(chunk)
        if candidate is not None:
            self._candidate(candidate, out)
        elif _blocked(chunk) and not self._finished:
            self._finished = True
            out.append(Finish("content_filter"))
        usage = usage_of(chunk.get("usageMetadata"))
        if usage is not None and usage != self._usage:
            self._usage = usage
            out.append(UsageReport(usage))

    def _candidate(self, candidate: dict[str, Any], out: list[StreamEvent]) -> None:
        raw = candidate.get("content")
        if isinstance(raw, dict) and "parts" in raw:
            content: list[Part] = []
            calls: list[ToolCall] = []
            _parts(raw["parts"], content, calls)
            for part in content:
                if isinstance(part, TextPart):
                    out.append(TextDelta(part.text))
                elif isinstance(part, ThinkingPart):
                    out.append(ThinkingDelta(part.text, part.signature))
            for call in calls:
                out.append(ToolCallStart(self._calls, call.id, call.name))
                out.append(ToolCallDelta(self._calls, call.arguments))
                self._calls += 1
        reason = finish_reason(candidate.get("finishReason"), self._calls > 0)
        if reason is not None and not self._finished:
            self._finished = True
            out.append(Finish(reason))


# --- embeddings ------------------------------------------------------------------------------


def _values(item: Any) -> list[float]:
    values = item.get("values") if isinstance(item, dict) else None
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise UpstreamDecodeError("upstream returned a malformed embedding")
    return [float(v) for v in values]


def decode_embeddings(body: dict[str, Any]) -> EmbeddingResponse:
    """`embedContent` (`embedding`), `batchEmbedContents` (`embeddings`) or Vertex
    `predict` (`predictions[].embeddings`, with token counts in `statistics`)."""
    if "embedding" in body:
        vectors = [_values(body["embedding"])]
    elif isinstance(body.get("embeddings"), list):
        vectors = [_values(item) for item in body["embeddings"]]
    elif isinstance(body.get("predictions"), list):
        tokens = 0
        vectors = []
        for prediction in body["predictions"]:
            embedding = prediction.get("embeddings") if isinstance(prediction, dict) else None
            vectors.append(_values(embedding))
            stats = embedding.get("statistics") if isinstance(embedding, dict) else None
            count = stats.get("token_count") if isinstance(stats, dict) else None
            tokens += int(count) if isinstance(count, int | float) else 0
        return EmbeddingResponse(vectors, Usage.of(tokens, 0) if tokens else None)
    else:
        raise UpstreamDecodeError("upstream returned an embeddings answer without vectors")
    meta = body.get("usageMetadata")
    prompt = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    return EmbeddingResponse(vectors, Usage.of(prompt, 0) if isinstance(prompt, int) else None)
