"""The azure-openai provider (contract §7.1, §7.2): URLs, bodies, credentials, Azure errors.

Token requests go through a recording `send` (the transport's role) that answers with the
recorded Entra ID bodies in tests/fixtures/azure; the socket-level path is covered by the
e2e tests against the fake Entra ID endpoint.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from aisix.errors import UpstreamConnectionError
from aisix.providers.azure import (
    AzureProvider,
    normalise_base,
    parse_error,
    retry_after_of,
)
from aisix.providers.base import Provider, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.providers.tokens import TokenUnavailable
from aisix.resources import DirectModel, ProviderKey, validate_value
from aisix.wire.base import Endpoint
from aisix.wire.types import UpstreamFault

ENDPOINTS_NATIVE: tuple[Endpoint, ...] = ("chat", "completions", "embeddings")
ENDPOINTS_TRANSLATED: tuple[Endpoint, ...] = ("messages", "responses")  # via chat

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "azure"
KEY = "0123456789abcdef0123456789abcdef"
CLIENT_SECRET = "cs~unit-test-client-secret"
TLS = TLSConfig()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def entra_secret(**extra: str) -> str:
    return json.dumps(
        {
            "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "client_id": "app-client-id",
            "client_secret": CLIENT_SECRET,
            **extra,
        }
    )


@dataclass
class Answer:
    status: int
    data: bytes

    def body(self) -> bytes:
        return self.data


class RecordingSend:
    """Stands in for the transport: records token requests, answers from a script."""

    def __init__(self, *answers: Answer | BaseException) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[UpstreamRequest, bool, float | None]] = []

    async def __call__(
        self, request: UpstreamRequest, *, stream: bool, timeout: float | None
    ) -> Answer:
        self.requests.append((request, stream, timeout))
        answer = self.answers.pop(0) if self.answers else Answer(200, fixture("entra_token.json"))
        if isinstance(answer, BaseException):
            raise answer
        return answer


def provider(
    secret: str = KEY,
    api_base: str = "https://contoso.openai.azure.com",
    send: RecordingSend | None = None,
    model_name: str = "gpt-4o-deploy",
    **fields: Any,
) -> AzureProvider:
    raw: dict[str, Any] = {
        "display_name": "azure",
        "adapter": "azure-openai",
        "secret": secret,
        "api_base": api_base,
        **fields,
    }
    key = validate_value("provider_keys", raw)
    model = validate_value(
        "models",
        {
            "display_name": "alias",
            "provider": "azure",
            "model_name": model_name,
            "provider_key_id": "pk",
        },
    )
    assert isinstance(key, ProviderKey) and isinstance(model, DirectModel)
    return AzureProvider(key, model, TLS, send or RecordingSend())


def call(endpoint: Any = "chat", stream: bool = False, **body: Any) -> UpstreamCall:
    return UpstreamCall(
        endpoint=endpoint,
        stream=stream,
        request_id="req-1",
        body={"model": "alias", "messages": [{"role": "user", "content": "hi"}], **body},
    )


@pytest.mark.parametrize(
    ("raw", "base"),
    [
        ("contoso", "https://contoso.openai.azure.com"),
        ("  contoso/ ", "https://contoso.openai.azure.com"),
        ("contoso.openai.azure.com", "https://contoso.openai.azure.com"),
        ("contoso/openai/deployments/x", "https://contoso.openai.azure.com"),
        ("localhost:8080", "https://localhost:8080"),
        ("https://contoso.openai.azure.com/", "https://contoso.openai.azure.com"),
        ("https://contoso.openai.azure.com/openai", "https://contoso.openai.azure.com"),
        (
            "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
            "https://contoso.openai.azure.com",
        ),
        ("https://x.cognitiveservices.azure.com/openai/", "https://x.cognitiveservices.azure.com"),
        ("http://127.0.0.1:8080/gw/openai/v1", "http://127.0.0.1:8080/gw"),
        ("https://apim.example.com/aoai", "https://apim.example.com/aoai"),
    ],
)
def test_api_base_normalisation(raw: str, base: str) -> None:
    assert normalise_base(raw) == base


def test_a_key_without_api_base_is_refused() -> None:
    key = validate_value("provider_keys", {"display_name": "k", "secret": KEY})  # adapter openai
    model = validate_value(
        "models",
        {"display_name": "a", "provider": "azure", "model_name": "d", "provider_key_id": "p"},
    )
    assert isinstance(key, ProviderKey) and isinstance(model, DirectModel)
    with pytest.raises(ValueError, match="api_base: required with adapter azure-openai"):
        AzureProvider(key, model, TLS, RecordingSend())


def test_deployment_urls_carry_the_api_version() -> None:
    target = provider(model_name="my deployment/v2")
    prefix = "https://contoso.openai.azure.com/openai/deployments/my%20deployment%2Fv2"
    assert target.urls == {
        "chat": prefix + "/chat/completions?api-version=2024-10-21",
        "completions": prefix + "/completions?api-version=2024-10-21",
        "embeddings": prefix + "/embeddings?api-version=2024-10-21",
        "images": prefix + "/images/generations?api-version=2024-10-21",
        "audio_transcriptions": prefix + "/audio/transcriptions?api-version=2024-10-21",
        "audio_translations": prefix + "/audio/translations?api-version=2024-10-21",
        "audio_speech": prefix + "/audio/speech?api-version=2024-10-21",
    }
    other = provider(azure={"api_version": "2025-01-01-preview"})
    assert other.urls["chat"].endswith("/chat/completions?api-version=2025-01-01-preview")


def test_endpoints_served() -> None:
    target: Provider = provider()
    assert target.adapter == "azure-openai" and target.family == "openai"
    assert target.codec.family == "openai"
    for endpoint in ENDPOINTS_NATIVE:
        assert target.supports(endpoint) and target.native(endpoint)
    for endpoint in ENDPOINTS_TRANSLATED:  # translated to the chat deployment
        assert target.supports(endpoint) and not target.native(endpoint)
    assert not target.supports("count_tokens")


def test_relayed_chat_body_and_headers() -> None:
    target = provider(
        request={
            "param_renames": {"max_tokens": "max_completion_tokens"},
            "default_body_fields": {"temperature": 0.1, "user": "default"},
            "default_headers": {"x-ms-client-tag": "aisix"},
        }
    )
    request = target.build(call(max_tokens=5, user="client"))
    assert request.method == "POST"
    assert request.url == target.urls["chat"]
    assert request.tls is TLS
    assert orjson.loads(request.body) == {
        "model": "gpt-4o-deploy",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 5,
        "temperature": 0.1,
        "user": "client",
    }
    assert request.headers == {
        "Content-Type": "application/json",
        "User-Agent": request.headers["User-Agent"],
        "Accept-Encoding": "identity",
        "x-aisix-request-id": "req-1",
        "x-ms-client-tag": "aisix",
    }
    assert request.headers["User-Agent"].startswith("aisix/")
    assert "api-key" not in request.headers  # credentials are added by authorize


def test_streams_force_usage_and_accept_sse() -> None:
    target = provider()
    request = target.build(call(stream=True, stream_options={"include_usage": False, "x": 1}))
    body = orjson.loads(request.body)
    assert body["stream_options"] == {"include_usage": True, "x": 1}
    assert request.headers["Accept"] == "text/event-stream"
    completions = target.build(
        UpstreamCall("completions", True, "r", body={"model": "a", "prompt": "p", "stream": True})
    )
    assert completions.url == target.urls["completions"]
    assert orjson.loads(completions.body)["stream_options"] == {"include_usage": True}


def test_embeddings_are_relayed_unchanged_but_for_model() -> None:
    target = provider()
    request = target.build(
        UpstreamCall("embeddings", False, "r", body={"model": "a", "input": ["x", "y"]})
    )
    assert request.url == target.urls["embeddings"]
    assert orjson.loads(request.body) == {"model": "gpt-4o-deploy", "input": ["x", "y"]}


def test_a_call_without_its_payload_is_a_programming_error() -> None:
    target = provider()
    with pytest.raises(ValueError, match="needs the client's body"):
        target.build(UpstreamCall("chat", False, "r"))
    with pytest.raises(ValueError, match="needs a canonical request"):
        target.build(UpstreamCall("messages", False, "r"))


def test_the_resource_key_goes_in_the_api_key_header() -> None:
    target = provider()
    request = asyncio.run(target.authorize(target.build(call())))
    assert request.headers["api-key"] == KEY
    assert "Authorization" not in request.headers


def test_entra_credentials_mint_a_bearer_token_once() -> None:
    send = RecordingSend()
    target = provider(entra_secret(token_url="http://127.0.0.1:9/tenant/token"), send=send)

    async def twice() -> list[UpstreamRequest]:
        return [await target.authorize(target.build(call())) for _ in range(2)]

    first, second = asyncio.run(twice())
    token = orjson.loads(fixture("entra_token.json"))["access_token"]
    assert first.headers["Authorization"] == f"Bearer {token}"
    assert second.headers["Authorization"] == f"Bearer {token}"
    assert "api-key" not in first.headers
    [(sent, stream, timeout)] = send.requests
    assert (sent.method, sent.url, stream, timeout) == (
        "POST",
        "http://127.0.0.1:9/tenant/token",
        False,
        10.0,
    )
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.body.decode(), strict_parsing=True) == {
        "grant_type": ["client_credentials"],
        "client_id": ["app-client-id"],
        "client_secret": [CLIENT_SECRET],
        "scope": ["https://cognitiveservices.azure.com/.default"],
    }
    assert sent.tls is TLS


def test_providers_with_the_same_credential_share_one_token() -> None:
    send = RecordingSend()
    secret = entra_secret(token_url="http://127.0.0.1:9/shared/token")
    one, two = provider(secret, send=send), provider(secret, send=send, model_name="other")

    async def both() -> None:
        await one.authorize(one.build(call()))
        await two.authorize(two.build(call()))

    asyncio.run(both())
    assert len(send.requests) == 1


def test_the_default_token_endpoint_is_the_tenants() -> None:
    send = RecordingSend()
    target = provider(entra_secret(), send=send)
    asyncio.run(target.authorize(target.build(call())))
    assert send.requests[0][0].url == (
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
    )


@pytest.mark.parametrize(
    ("answer", "message", "retryable"),
    [
        (
            Answer(401, fixture("entra_error_invalid_client.json")),
            "upstream rejected the provider credentials "
            "(Entra ID token endpoint: 401 invalid_client AADSTS7000215)",
            False,
        ),
        (
            Answer(400, b'{"error": "' + CLIENT_SECRET.encode() + b'"}'),
            "upstream rejected the provider credentials (Entra ID token endpoint: 400)",
            False,
        ),
        (Answer(503, b"busy"), "Entra ID token endpoint returned 503", True),
        (Answer(429, b"{}"), "Entra ID token endpoint returned 429", True),
        (Answer(200, b"<html>"), "Entra ID token endpoint returned a body that is not JSON", False),
        (
            Answer(200, b'{"access_token": "t", "token_type": "mac", "expires_in": 60}'),
            "no usable bearer token",
            False,
        ),
        (
            Answer(200, b'{"access_token": "t", "expires_in": 0}'),
            "no usable bearer token",
            False,
        ),
        (
            UpstreamConnectionError("could not connect to the upstream"),
            "Entra ID token request failed: could not connect to the upstream",
            True,
        ),
        (OSError(CLIENT_SECRET), "Entra ID token request failed (OSError)", True),
    ],
)
def test_token_failures_name_the_cause_but_never_the_secret(
    answer: Answer | BaseException, message: str, retryable: bool
) -> None:
    url = f"http://127.0.0.1:9/{abs(hash(message))}/token"  # a source of its own
    target = provider(entra_secret(token_url=url), send=RecordingSend(answer))
    with pytest.raises(TokenUnavailable) as caught:
        asyncio.run(target.authorize(target.build(call())))
    err = caught.value
    assert message in err.message
    assert CLIENT_SECRET not in err.message and CLIENT_SECRET not in str(err)
    assert err.status == 502 and err.type == "upstream_auth_error"
    assert err.retryable is retryable


def test_string_lifetimes_are_accepted() -> None:
    body = b'{"access_token": "tok-s", "token_type": "bearer", "expires_in": "3600"}'
    target = provider(
        entra_secret(token_url="http://127.0.0.1:9/str/token"),
        send=RecordingSend(Answer(200, body)),
    )
    request = asyncio.run(target.authorize(target.build(call())))
    assert request.headers["Authorization"] == "Bearer tok-s"


def test_a_malformed_secret_fails_the_build_without_echoing_it() -> None:
    with pytest.raises(ValueError) as caught:
        provider('{"tenant_id": "t", "client_secret": "' + CLIENT_SECRET + '"}')
    assert CLIENT_SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        (
            "error_content_filter.json",
            UpstreamFault(
                message="The response was filtered due to the prompt triggering Azure OpenAI's "
                "content management policy. Please modify your prompt and retry. To learn more "
                "about our content filtering policies please read our documentation: "
                "https://go.microsoft.com/fwlink/?linkid=2198766",
                code="content_filter",
                param="prompt",
                type="ResponsibleAIPolicyViolation",
            ),
        ),
        (
            "error_429.json",
            UpstreamFault(
                message=orjson.loads(fixture("error_429.json"))["error"]["message"], code="429"
            ),
        ),
        (
            "error_401_token.json",
            UpstreamFault(
                message="Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired.",
                code="401",
            ),
        ),
        (
            "error_deployment_not_found.json",
            UpstreamFault(
                message=orjson.loads(fixture("error_deployment_not_found.json"))["error"][
                    "message"
                ],
                code="DeploymentNotFound",
            ),
        ),
        (
            "error_bad_request.json",
            UpstreamFault(
                message="Invalid value for 'temperature': must be between 0 and 2.",
                code="invalid_value",
                param="temperature",
                type="invalid_request_error",
            ),
        ),
    ],
)
def test_azure_error_bodies(name: str, fault: UpstreamFault) -> None:
    assert parse_error(fixture(name)) == fault
    assert provider().codec.parse_error(fixture(name)) == fault


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502</html>", b"[1]", b'"x"', b'{"error": 5}', b'{"detail": "x"}', b"{"],
)
def test_foreign_error_bodies_give_an_empty_fault(body: bytes) -> None:
    assert parse_error(body) == UpstreamFault()


def test_error_codes_of_any_json_type() -> None:
    assert parse_error(b'{"error": {"code": 429, "message": "m"}}').code == "429"
    assert parse_error(b'{"error": {"code": true, "message": "m"}}').code is None
    assert parse_error(b'{"error": "plain text"}') == UpstreamFault(message="plain text")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "6"}, 6.0),
        ({"retry-after": "soon", "x-ratelimit-reset-requests": "2"}, 2.0),
        ({"x-ratelimit-reset-requests": "1m30s"}, 90.0),
        ({"x-ratelimit-reset-tokens": "250ms"}, 0.25),
        ({"x-ratelimit-reset-requests": "1h2m3.5s"}, 3723.5),
        ({"x-ratelimit-reset-requests": "5x"}, None),
        ({"x-ratelimit-reset-requests": "s"}, None),
        ({"retry-after": "-3"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_from_azure_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_of(headers) == seconds
    assert AzureProvider.retry_after(headers) == seconds


def test_media_apis_azure_serves_and_refuses() -> None:
    target = provider()
    assert target.native("images") and target.native("audio_speech")
    assert not target.supports("moderations") and not target.supports("rerank")
    request = target.build(UpstreamCall("images", False, "r", body={"model": "a", "prompt": "p"}))
    assert "/images/generations?api-version=" in request.url
    assert orjson.loads(request.body)["prompt"] == "p"
