"""The `openai` adapter (contract §7.1, §7.2) and Retry-After parsing."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from aisix.providers.base import UpstreamCall, UpstreamRequest
from aisix.providers.openai import DEFAULT_BASE, OpenAIProvider, normalise_base
from aisix.providers.registry import Registry
from aisix.providers.transport import parse_retry_after
from aisix.resources import DirectModel, ProviderKey, validate_value

SECRET = "sk-upstream-secret"


def target(api_base: str | None = None, **request: Any) -> OpenAIProvider:
    raw: dict[str, Any] = {"display_name": "pk", "secret": SECRET}
    if api_base is not None:
        raw["api_base"] = api_base
    if request:
        raw["request"] = request
    key = validate_value("provider_keys", raw)
    model = validate_value(
        "models",
        {
            "display_name": "alias",
            "provider": "openai",
            "model_name": "gpt-4o-2024",
            "provider_key_id": "pk",
        },
    )
    assert isinstance(key, ProviderKey) and isinstance(model, DirectModel)
    return OpenAIProvider(key, model, Registry().tls_for(key))


def build(
    t: OpenAIProvider, endpoint: Any, body: dict[str, Any], stream: bool, request_id: str
) -> UpstreamRequest:
    request = t.build(UpstreamCall(endpoint, stream, request_id, body=body))
    return asyncio.run(t.authorize(request))


def prepare(
    t: OpenAIProvider, body: dict[str, Any], stream: bool = False
) -> tuple[UpstreamRequest, dict[str, Any]]:
    prepared = build(t, "chat", body, stream, "req-123")
    return prepared, orjson.loads(prepared.body)


CHAT = {"model": "alias", "messages": [{"role": "user", "content": "hi"}]}


# --- api_base normalisation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "https://api.openai.com/v1"),
        ("", "https://api.openai.com/v1"),
        ("https://api.openai.com", "https://api.openai.com/v1"),
        ("http://api.openai.com", "http://api.openai.com/v1"),
        ("https://api.openai.com/", "https://api.openai.com/v1"),
        ("  https://api.openai.com/v1/  ", "https://api.openai.com/v1"),
        ("https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1"),
        ("https://api.openai.com/chat/completions", "https://api.openai.com/v1"),
        ("https://llm.local/v1/completions", "https://llm.local/v1"),
        ("https://llm.local/v1/embeddings/", "https://llm.local/v1"),
        ("https://llm.local/v2", "https://llm.local/v2"),
        ("https://open.bigmodel.cn/api/paas/v4", "https://open.bigmodel.cn/api/paas/v4"),
        ("https://gw.example/openai/v1", "https://gw.example/openai/v1"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://api.openai.com.proxy.example", "https://api.openai.com.proxy.example"),
        # only one pasted suffix is stripped
        ("https://h/v1/chat/completions/chat/completions", "https://h/v1/chat/completions"),
    ],
)
def test_normalise_base(given: str | None, expected: str) -> None:
    assert normalise_base(given) == expected


def test_target_urls_use_normalised_base() -> None:
    t = target("https://llm.local/v1/chat/completions/")
    assert prepare(t, CHAT)[0].url == "https://llm.local/v1/chat/completions"
    embed = build(t, "embeddings", {"model": "alias", "input": "x"}, False, "r")
    assert embed.url == "https://llm.local/v1/embeddings"
    assert build(t, "completions", {"model": "a", "prompt": "x"}, False, "r").url.endswith(
        "/v1/completions"
    )
    assert target().base == DEFAULT_BASE


# --- prepare -------------------------------------------------------------------------------


def test_model_replaced_and_unknown_fields_forwarded() -> None:
    _, body = prepare(target(), {**CHAT, "logit_bias": {"1": 2}, "seed": 7})
    assert body["model"] == "gpt-4o-2024"
    assert body["logit_bias"] == {"1": 2} and body["seed"] == 7
    assert body["messages"] == CHAT["messages"]


def test_param_renames() -> None:
    t = target(param_renames={"max_tokens": "max_completion_tokens"})
    _, body = prepare(t, {**CHAT, "max_tokens": 50})
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body
    _, untouched = prepare(t, CHAT)
    assert "max_completion_tokens" not in untouched


def test_default_body_fields_only_where_absent() -> None:
    t = target(default_body_fields={"temperature": 0.1, "user": "gateway"})
    _, body = prepare(t, {**CHAT, "temperature": 0.9})
    assert body["temperature"] == 0.9
    assert body["user"] == "gateway"
    _, falsy = prepare(t, {**CHAT, "temperature": 0})
    assert falsy["temperature"] == 0


def test_stream_forces_include_usage_and_keeps_other_options() -> None:
    client = {**CHAT, "stream": True, "stream_options": {"include_usage": False, "x": 1}}
    prepared, body = prepare(target(), client, stream=True)
    assert body["stream_options"] == {"include_usage": True, "x": 1}
    assert prepared.headers["Accept"] == "text/event-stream"
    _, no_options = prepare(target(), {**CHAT, "stream": True}, stream=True)
    assert no_options["stream_options"] == {"include_usage": True}


def test_non_stream_keeps_client_stream_options() -> None:
    prepared, body = prepare(target(), {**CHAT, "stream_options": {"include_usage": False}})
    assert body["stream_options"] == {"include_usage": False}
    assert "Accept" not in prepared.headers


def test_prepare_never_mutates_the_client_body() -> None:
    client = {**CHAT, "max_tokens": 5, "stream_options": {"include_usage": False}}
    snapshot = orjson.dumps(client)
    t = target(param_renames={"max_tokens": "max_completion_tokens"}, default_body_fields={"n": 1})
    prepare(t, client, stream=True)
    assert orjson.dumps(client) == snapshot


def test_credential_and_request_id_headers() -> None:
    prepared, _ = prepare(target(), CHAT)
    assert prepared.headers["Authorization"] == f"Bearer {SECRET}"
    assert prepared.headers["x-aisix-request-id"] == "req-123"
    assert prepared.headers["Content-Type"] == "application/json"
    assert prepared.headers["User-Agent"].startswith("aisix/")


def test_default_headers_applied_last() -> None:
    t = target(default_headers={"X-Org": "acme", "X-Aisix-Request-Id": "fixed"})
    prepared, _ = prepare(t, CHAT)
    assert prepared.headers["X-Org"] == "acme"
    assert prepared.headers["X-Aisix-Request-Id"] == "fixed"


def on_the_wire(headers: dict[str, str]) -> CIMultiDict[str]:
    """What aiohttp sends for a headers dict: names case-insensitive, later entries win."""
    wire: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        wire[name] = value
    return wire


def test_default_header_overrides_builtin_case_insensitively() -> None:
    t = target(
        default_headers={"user-agent": "my-agent/1", "content-type": "application/json; x=1"}
    )
    wire = on_the_wire(prepare(t, CHAT)[0].headers)
    assert wire.getall("user-agent") == ["my-agent/1"]
    assert wire.getall("content-type") == ["application/json; x=1"]
    assert wire["authorization"] == f"Bearer {SECRET}"


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("5", 5.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_retry_after_seconds(raw: str | None, expected: float | None) -> None:
    assert parse_retry_after(raw) == expected


def test_retry_after_http_date() -> None:
    future = parse_retry_after(formatdate(time.time() + 120, usegmt=True))
    assert future is not None and 110 <= future <= 121
    assert parse_retry_after(formatdate(time.time() - 120, usegmt=True)) == 0.0
    assert parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT") is None


def test_media_requests_keep_their_shape() -> None:
    """Speech streams are binary (no stream_options, no SSE Accept); uploads are re-encoded
    multipart with their own Content-Type; each goes to its own path under the base."""
    from aisix.wire.openai_media import SPEECH, TRANSCRIPTIONS

    t = target("https://api.example.com/v1")
    speech = SPEECH.parse(b'{"model": "alias", "input": "hi", "voice": "alloy"}')
    request = t.build(UpstreamCall("audio_speech", True, "r", body=speech))
    assert request.url == "https://api.example.com/v1/audio/speech"
    assert orjson.loads(request.body) == {"model": "gpt-4o-2024", "input": "hi", "voice": "alloy"}
    assert "Accept" not in request.headers
    raw = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nalias\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
        b"--b--\r\n"
    )
    upload = TRANSCRIPTIONS.parse_upload(raw, "multipart/form-data; boundary=b")
    request = t.build(UpstreamCall("audio_transcriptions", False, "r", body=upload))
    assert request.url == "https://api.example.com/v1/audio/transcriptions"
    assert request.headers["Content-Type"] == "multipart/form-data; boundary=b"
    assert request.body == raw.replace(b"alias", b"gpt-4o-2024")
    for endpoint, path in (("images", "/images/generations"), ("rerank", "/rerank")):
        built = t.build(UpstreamCall(endpoint, False, "r", body={"model": "alias"}))  # type: ignore[arg-type]
        assert built.url == "https://api.example.com/v1" + path
        assert orjson.loads(built.body) == {"model": "gpt-4o-2024"}
    assert t.native("moderations") and t.supports("rerank")
