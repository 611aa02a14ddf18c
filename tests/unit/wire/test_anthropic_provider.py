"""The anthropic provider (contract §6.9, §7.2): base URL normalisation, native and translated
requests (URL, headers, body), `anthropic-beta` on native calls only, the secret added only by
`authorize` and never shown by the provider's repr."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from aisix import __version__
from aisix.errors import NotImplementedByAdapter
from aisix.providers.anthropic import AnthropicProvider, build_provider, normalise_base
from aisix.providers.base import TLSConfig, UpstreamCall
from aisix.providers.registry import Registry
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.types import ChatRequest, Message, TextPart

SECRET = "sk-ant-api03-very-secret"


def provider(**key_fields: Any) -> AnthropicProvider:
    key = ProviderKey(display_name="ant", secret=SECRET, adapter="anthropic", **key_fields)
    model = DirectModel(
        display_name="claude",
        provider="anthropic",
        model_name="claude-sonnet-4-5",
        provider_key_id="k",
    )
    return build_provider(key, model, Registry().tls_for(key))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("given", "base"),
    [
        (None, "https://api.anthropic.com"),
        ("", "https://api.anthropic.com"),
        ("  https://api.anthropic.com/  ", "https://api.anthropic.com"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com"),
        ("https://api.anthropic.com/v1/messages/", "https://api.anthropic.com"),
        ("http://127.0.0.1:8080/proxy/anthropic/v1", "http://127.0.0.1:8080/proxy/anthropic"),
        ("https://gw.example.com/anthropic", "https://gw.example.com/anthropic"),
    ],
)
def test_api_base_normalisation(given: str | None, base: str) -> None:
    assert normalise_base(given) == base


def test_capabilities() -> None:
    p = provider()
    assert (p.adapter, p.family, p.codec.family) == ("anthropic", "anthropic", "anthropic")
    assert [
        e
        for e in ("chat", "messages", "count_tokens", "completions", "embeddings", "responses")
        if p.supports(e)
    ] == [
        "chat",
        "messages",
        "count_tokens",
        "responses",
    ]
    assert p.native("messages") and p.native("count_tokens") and not p.native("chat")


def test_native_messages_call_forwards_version_and_beta() -> None:
    p = provider(api_base="http://up:1/v1", request={"default_headers": {"x-team": "blue"}})
    body = {"model": "claude", "max_tokens": 5, "stream": True, "messages": [], "top_k": 3}
    call = UpstreamCall(
        endpoint="messages",
        stream=True,
        request_id="rid-1",
        body=body,
        client_headers={
            "anthropic-version": "2024-01-01",
            "anthropic-beta": "prompt-caching-2024-07-31",
        },
    )
    request = p.build(call)
    assert request.method == "POST" and request.url == "http://up:1/v1/messages"
    assert orjson.loads(request.body) == {**body, "model": "claude-sonnet-4-5"}
    assert body["model"] == "claude"  # the client's body is not modified
    assert request.headers == {
        "Content-Type": "application/json",
        "User-Agent": f"aisix/{__version__}",
        "Accept-Encoding": "identity",
        "x-aisix-request-id": "rid-1",
        "anthropic-version": "2024-01-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "Accept": "text/event-stream",
        "x-team": "blue",
    }
    assert SECRET not in repr(request.headers) and SECRET not in repr(p)
    authorized = asyncio.run(p.authorize(request))
    assert authorized.headers["x-api-key"] == SECRET


def test_count_tokens_is_native_and_version_defaults() -> None:
    p = provider()
    request = p.build(
        UpstreamCall(
            endpoint="count_tokens",
            stream=False,
            request_id="r",
            body={"model": "x", "messages": []},
        )
    )
    assert request.url == "https://api.anthropic.com/v1/messages/count_tokens"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in request.headers and "Accept" not in request.headers


def test_translated_chat_call_encodes_and_sends_no_client_beta() -> None:
    p = provider(tls={"verify": False})
    canonical = ChatRequest(
        model="claude", messages=[Message("user", [TextPart("hi")])], stream=True
    )
    request = p.build(
        UpstreamCall(
            endpoint="chat",
            stream=True,
            request_id="r",
            canonical=canonical,
            client_headers={"anthropic-beta": "x"},
        )
    )
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert orjson.loads(request.body) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4096,
        "stream": True,
    }
    assert "anthropic-beta" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.tls == TLSConfig(verify=False)


def test_unsupported_endpoints_are_501() -> None:
    with pytest.raises(NotImplementedByAdapter) as refused:
        provider().build(UpstreamCall(endpoint="embeddings", stream=False, request_id="r", body={}))
    assert refused.value.status == 501 and "anthropic" in refused.value.message


def test_a_bad_secret_fails_the_build_without_echo() -> None:
    # admin writes refuse it already; a value stored before that check still must not build
    key = ProviderKey.model_construct(
        display_name="ant", secret="sk ant secret", adapter="anthropic"
    )
    model = DirectModel(display_name="c", provider="anthropic", model_name="m", provider_key_id="k")
    with pytest.raises(ValueError) as refused:
        build_provider(key, model, TLSConfig())
    assert "secret" in str(refused.value) and "sk ant" not in str(refused.value)
