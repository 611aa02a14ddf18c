"""Checking inbound OpenAI-shaped request bodies (contract §6.7, §6.10), and the basics
every model API shares (a JSON object with a `model` string and a boolean `stream`).

Only what the gateway relies on is checked (a 400 names the field); every other field is
forwarded unchanged to OpenAI-family upstreams.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix.errors import InvalidRequest
from aisix.wire.base import Endpoint

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def invalid(detail: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"request payload is invalid: {detail}", param=param)


def parse_model_request(raw: bytes) -> dict[str, Any]:
    """A JSON object with a non-empty string `model` and, if present, a boolean `stream`:
    what every model endpoint (OpenAI or Anthropic) requires first."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("body is not valid JSON (UTF-8)") from None
    if not isinstance(body, dict):
        raise invalid("body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid('"model" is required and must be a non-empty string', "model")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid('"stream" must be a boolean', "stream")
    return body


def parse_body(raw: bytes, endpoint: Endpoint) -> dict[str, Any]:
    body = parse_model_request(raw)
    stream = body.get("stream", False)
    if endpoint == "chat":
        _check_messages(body.get("messages"))
    elif endpoint == "completions":
        if "prompt" not in body:
            raise invalid('"prompt" is required', "prompt")
    elif endpoint == "embeddings":
        _check_embedding_input(body.get("input"))
        if stream:
            raise invalid('"stream" is not supported for embeddings', "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid('"stream_options" must be an object', "stream_options")
    return body


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid('"messages" must be a non-empty array', "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise invalid(f"messages[{i}].role is missing or not a known role", "messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise invalid(f"messages[{i}].content must be a string, null or an array", "messages")


def _check_embedding_input(value: Any) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value) or all(isinstance(v, int) for v in value):
            return
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return
    raise invalid('"input" must be a string, an array of strings, or token arrays', "input")


def client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
