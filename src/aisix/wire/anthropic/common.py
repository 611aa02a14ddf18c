"""What the Anthropic upstream codec and the Messages inbound codec share.

Usage in both directions (Anthropic `input_tokens` excludes cache reads and writes; the
canonical `prompt_tokens` includes them), stop reasons in both directions, SSE event framing,
the error body (`{"type": "error", "error": {"type", "message"}}`) read into an
`UpstreamFault`, and the error raised for an `event: error` frame.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import (
    UpstreamDecodeError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from aisix.wire.types import FinishReason, UpstreamFault, Usage

FAMILY = "anthropic"
#: the `anthropic-version` sent when the client sent none (contract §6.9, §7.2)
DEFAULT_VERSION = "2023-06-01"

#: Anthropic `stop_reason` → canonical finish reason (unknown reasons read as "stop")
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: canonical finish reason → Anthropic `stop_reason`
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def message_id(request_id: str) -> str:
    """`msg_` and the request id's characters that are safe in an id."""
    return "msg_" + "".join(c for c in request_id if c.isalnum())


def usage_of(data: Any) -> Usage | None:
    """An Anthropic `usage` object (clamped); None when it carries no token counts.
    prompt = input + cache reads + cache writes; cached = cache reads."""
    if not isinstance(data, dict):
        return None
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    if not any(isinstance(data.get(k), int) for k in keys):
        return None
    read = Usage.of(data.get("cache_read_input_tokens"), 0).prompt_tokens
    written = Usage.of(data.get("cache_creation_input_tokens"), 0).prompt_tokens
    fresh = Usage.of(data.get("input_tokens"), 0).prompt_tokens
    return Usage.of(fresh + read + written, data.get("output_tokens"), read, None, written)


class UsageTally:
    """A stream's usage: `message_start` and then `message_delta` report cumulative totals,
    and a later report omits the fields that did not change (Anthropic often sends only
    `output_tokens` in `message_delta`), so fields are merged one by one before reading."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}

    def add(self, raw: Any) -> Usage | None:
        """The usage so far once `raw` (a `usage` object) is merged in; None if no counts."""
        if isinstance(raw, dict):
            for name, value in raw.items():
                if value is not None:
                    self._fields[name] = value
        return usage_of(self._fields)


def usage_json(usage: Usage) -> dict[str, int]:
    """A canonical usage in Anthropic's shape (cache reads and writes out of `input_tokens`)."""
    fresh = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return {
        "input_tokens": max(fresh, 0),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def finish_reason(raw: Any) -> FinishReason | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise UpstreamDecodeError("upstream returned a malformed message: stop_reason")
    return FINISH_REASONS.get(raw, "stop")


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames it."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def load_event(data: bytes) -> dict[str, Any]:
    """One stream frame's JSON object; garbage is an `UpstreamDecodeError`."""
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamDecodeError("upstream sent a stream event that is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamDecodeError("upstream sent a stream event that is not an object")
    return parsed


def parse_error(body: bytes) -> UpstreamFault:
    """What an Anthropic error body says; empty fields when it is not that shape."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamFault()
    return fault_of(parsed)


def fault_of(parsed: Any) -> UpstreamFault:
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return UpstreamFault()
    message, kind = error.get("message"), error.get("type")
    return UpstreamFault(
        message=message if isinstance(message, str) and message else None,
        type=kind if isinstance(kind, str) and kind else None,
    )


def stream_error(parsed: dict[str, Any]) -> UpstreamError:
    """The failure an `event: error` frame reports, classified like the HTTP status Anthropic
    gives the same error type: `overloaded_error` (529) and `api_error` (500) are server
    errors (retryable: before the stream's head, the attempt loop may fail over),
    `rate_limit_error` a 429, anything else a 502 upstream error. The message is the
    upstream's."""
    fault = fault_of(parsed)
    message = fault.message or "upstream stream error"
    if fault.type in ("overloaded_error", "api_error"):
        return UpstreamServerError(message)
    if fault.type == "rate_limit_error":
        return UpstreamRateLimited(message, code=fault.type)
    return UpstreamError(message, code=fault.type, status=502)
