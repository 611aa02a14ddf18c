"""`POST /v1/messages/count_tokens` (contract §6.1; issue 11 item 2).

For Anthropic targets the body is relayed (only `model` rewritten) and the upstream's
`{"input_tokens": N}` returned as it came. Other targets get a local estimate, documented
and monotone in the prompt: the UTF-8 bytes of every text in the request — `system`, text
blocks, tool results, tool-use inputs and tool definitions (names, descriptions, schemas as
JSON) — divided by 4, rounded up, plus 1 per message (turn framing). Images and documents
count only their text (it is an estimate, not a tokenizer).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from aisix.errors import GatewayError, NotImplementedByAdapter
from aisix.wire.anthropic.common import FAMILY
from aisix.wire.anthropic.inbound import FORWARD_HEADERS, check_messages
from aisix.wire.base import Endpoint, StreamEncoder, StreamRelay
from aisix.wire.request import invalid, parse_model_request
from aisix.wire.types import ChatRequest, ChatResponse

JsonObject = dict[str, Any]


def _text(value: Any, out: list[str]) -> None:
    """Every string under `value` that is text a model reads."""
    if isinstance(value, str):
        out.append(value)
        return
    if isinstance(value, list):
        for item in value:
            _text(item, out)
        return
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    if kind == "tool_use":
        out.append(str(value.get("name") or ""))
        out.append(orjson.dumps(value.get("input") or {}).decode())
        return
    for name in ("text", "thinking", "title", "context"):
        if isinstance(value.get(name), str):
            out.append(value[name])
    if kind == "tool_result" or kind == "search_result":
        _text(value.get("content"), out)
    source = value.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        _text(source.get("data"), out)


def estimate_tokens(body: JsonObject) -> int:
    """The local estimate of a Messages request's input tokens (module docstring)."""
    texts: list[str] = []
    _text(body.get("system"), texts)
    messages = body.get("messages") or []
    for message in messages:
        if isinstance(message, dict):
            _text(message.get("content"), texts)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        texts.append(orjson.dumps(tools).decode())
    size = sum(len(t.encode()) for t in texts)
    return math.ceil(size / 4) + len(messages)


class CountTokens:
    """The count_tokens client API as an `InboundCodec`: native relay for Anthropic targets;
    every other target gets `estimate(body)` instead of an upstream call (it has no
    canonical form and no stream: `to_canonical` and the stream methods refuse)."""

    name = "anthropic-count-tokens"
    family = FAMILY
    endpoint: Endpoint = "count_tokens"
    forward_headers: frozenset[bytes] = FORWARD_HEADERS

    def parse(self, raw: bytes) -> JsonObject:
        """`model` and `messages` required (no `max_tokens`); no `stream`."""
        body = parse_model_request(raw)
        check_messages(body)
        if body.get("stream"):
            raise invalid('"stream" is not supported for count_tokens', "stream")
        return body

    def estimate(self, body: JsonObject) -> JsonObject:
        """The answer for a target without a native count."""
        return {"input_tokens": estimate_tokens(body)}

    def to_canonical(self, body: JsonObject) -> ChatRequest:
        raise NotImplementedByAdapter(
            "count_tokens is native on anthropic targets and estimated locally for others"
        )

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: JsonObject
    ) -> JsonObject:
        usage = response.usage
        return {"input_tokens": usage.prompt_tokens if usage is not None else 0}

    def stream_encoder(self, alias: str, request_id: str, body: JsonObject) -> StreamEncoder:
        raise invalid('"stream" is not supported for count_tokens', "stream")

    def passthrough_stream(self, alias: str, body: JsonObject) -> StreamRelay:
        raise invalid('"stream" is not supported for count_tokens', "stream")

    def passthrough_answer(self, body: JsonObject, alias: str) -> JsonObject:
        """The upstream's count, as it came (it names no model)."""
        return body

    def error_body(self, err: GatewayError) -> bytes:
        return err.anthropic_body()


COUNT_TOKENS = CountTokens()
