"""The gemini and vertex providers: URLs, headers and bodies they build, and the credential
`authorize` adds — Vertex tokens minted by google-auth against the fake Google OAuth endpoint
on a real socket (service account and Application Default Credentials), single flight,
cached, and failures reported without secrets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aisix.errors import UpstreamAuthError
from aisix.providers import gemini, vertex
from aisix.providers.base import TLSConfig, UpstreamCall
from aisix.providers.registry import FACTORIES
from aisix.providers.tokens import TokenUnavailable
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.types import ChatRequest, EmbeddingRequest, Message, TextPart
from fakes.gemini_upstream import FakeGeminiUpstream, ServiceAccount

TLS = TLSConfig()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGeminiUpstream]:
    with FakeGeminiUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _clean(fake: FakeGeminiUpstream) -> None:
    fake.reset()
    fake.token_lifetime_s = 3600


def key(adapter: Any, secret: str, api_base: str | None = None, **fields: Any) -> ProviderKey:
    return ProviderKey(
        display_name="k", adapter=adapter, secret=secret, api_base=api_base, **fields
    )


def model(name: str = "gemini-2.5-flash") -> DirectModel:
    return DirectModel(
        display_name="alias", provider="google", model_name=name, provider_key_id="k"
    )


def chat_call(stream: bool = False) -> UpstreamCall:
    request = ChatRequest("alias", [Message("user", [TextPart("hi")])], stream=stream)
    return UpstreamCall("chat", stream, "req-1", canonical=request)


def test_registry_knows_both_adapters() -> None:
    assert FACTORIES["gemini"] is gemini.build_provider
    assert FACTORIES["vertex"] is vertex.build_provider


@pytest.mark.parametrize(
    ("api_base", "root"),
    [
        (None, "https://generativelanguage.googleapis.com"),
        ("https://proxy.example/v1beta/", "https://proxy.example"),
        ("http://127.0.0.1:9/", "http://127.0.0.1:9"),  # admin writes refuse whitespace
    ],
)
def test_gemini_urls_and_headers(api_base: str | None, root: str) -> None:
    provider = gemini.build_provider(
        key("gemini", "AIza-k", api_base, request={"default_headers": {"x-team": "a"}}),
        model("models/gemini-2.5-flash"),
        TLS,
    )
    assert provider.family == "gemini" and not provider.native("chat")
    assert provider.supports("chat") and provider.supports("messages")
    assert provider.supports("embeddings") and provider.supports("responses")
    assert not provider.supports("completions")
    unary = provider.build(chat_call())
    assert unary.url == f"{root}/v1beta/models/gemini-2.5-flash:generateContent"
    assert orjson.loads(unary.body) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    stream = provider.build(chat_call(stream=True))
    assert stream.url == f"{root}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert stream.headers["Accept"] == "text/event-stream"
    assert stream.headers["x-aisix-request-id"] == "req-1" and stream.headers["x-team"] == "a"
    assert "x-goog-api-key" not in stream.headers  # only authorize adds the credential
    done = asyncio.run(provider.authorize(stream))
    assert done.headers["x-goog-api-key"] == "AIza-k"


def test_gemini_embedding_urls() -> None:
    provider = gemini.build_provider(key("gemini", "k"), model("gemini-embedding-001"), TLS)
    one = UpstreamCall("embeddings", False, "r", embedding=EmbeddingRequest("a", ["x"]))
    many = UpstreamCall("embeddings", False, "r", embedding=EmbeddingRequest("a", ["x", "y"]))
    assert provider.build(one).url.endswith("/models/gemini-embedding-001:embedContent")
    assert provider.build(many).url.endswith("/models/gemini-embedding-001:batchEmbedContents")


def stored(adapter: str, secret: str) -> ProviderKey:
    """A value stored before admin writes checked secret formats (no validation here)."""
    return ProviderKey.model_construct(display_name="k", adapter=adapter, secret=secret)  # type: ignore[arg-type]


def test_malformed_stored_secret_fails_the_attempt_without_echoing_it() -> None:
    provider = gemini.build_provider(stored("gemini", "bad key with spaces"), model(), TLS)
    with pytest.raises(UpstreamAuthError) as caught:
        asyncio.run(provider.authorize(provider.build(chat_call())))
    assert "bad key" not in caught.value.message
    broken = vertex.build_provider(stored("vertex", '{"project": "p"}'), model(), TLS)
    with pytest.raises(UpstreamAuthError) as caught:
        asyncio.run(broken.authorize(broken.build(chat_call())))
    assert "region" in caught.value.message


def vertex_secret(**fields: Any) -> str:
    return json.dumps({"project": "proj-1", "region": "europe-west4", **fields})


def test_vertex_urls_and_given_access_token() -> None:
    provider = vertex.build_provider(
        key("vertex", vertex_secret(access_token="ya29.given")), model(), TLS
    )
    request = asyncio.run(provider.authorize(provider.build(chat_call(stream=True))))
    assert request.url == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/"
        "europe-west4/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert request.headers["Authorization"] == "Bearer ya29.given"
    glob = vertex.build_provider(
        key("vertex", json.dumps({"project": "p", "region": "global", "access_token": "t"})),
        model(),
        TLS,
    )
    assert glob.build(chat_call()).url.startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"
    )


def test_vertex_embeddings_use_predict_for_non_gemini_models() -> None:
    secret = vertex_secret(access_token="t")
    provider = vertex.build_provider(key("vertex", secret), model("text-embedding-005"), TLS)
    call = UpstreamCall("embeddings", False, "r", embedding=EmbeddingRequest("a", ["x", "y"]))
    request = provider.build(call)
    assert request.url.endswith("/publishers/google/models/text-embedding-005:predict")
    assert orjson.loads(request.body) == {"instances": [{"content": "x"}, {"content": "y"}]}


def service_account_key(fake: FakeGeminiUpstream, account: ServiceAccount) -> ProviderKey:
    secret = vertex_secret(
        service_account_json=account.info("https://oauth2.googleapis.com/token"),
        token_url=fake.token_url,
    )
    return key("vertex", secret, fake.url)


async def authorize_many(providers: list[vertex.VertexProvider], n: int) -> list[str]:
    chosen = [providers[i % len(providers)] for i in range(n)]
    done = await asyncio.gather(*(p.authorize(p.build(chat_call())) for p in chosen))
    return [r.headers["Authorization"] for r in done]


def test_service_account_tokens_are_minted_once_for_concurrent_callers(
    fake: FakeGeminiUpstream,
) -> None:
    account = ServiceAccount.generate()
    fake.trust(account)
    pk = service_account_key(fake, account)
    # two models of one key, as in one snapshot: they share the token source
    providers = [vertex.build_provider(pk, model(), TLS), vertex.build_provider(pk, model(), TLS)]

    async def scenario() -> list[str]:
        first = await authorize_many(providers, 20)
        again = await authorize_many(providers, 5)
        return first + again

    headers = asyncio.run(scenario())
    [grant] = fake.grants
    assert grant.error is None and grant.issued is not None
    assert set(headers) == {f"Bearer {grant.issued}"}
    assert grant.claims["iss"] == account.email
    assert grant.claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"


def test_token_endpoint_failure_is_an_auth_error_without_secrets(
    fake: FakeGeminiUpstream,
) -> None:
    account = ServiceAccount.generate()
    fake.trust(account)
    fake.script_token_failures(403)  # not retried by google-auth
    provider = vertex.build_provider(service_account_key(fake, account), model(), TLS)
    with pytest.raises(TokenUnavailable) as caught:
        asyncio.run(provider.authorize(provider.build(chat_call())))
    message = caught.value.message
    assert caught.value.status == 502
    assert "PRIVATE KEY" not in message and account.email not in message
    assert "assertion" not in message


def test_untrusted_signing_key_is_refused(fake: FakeGeminiUpstream) -> None:
    trusted, impostor = ServiceAccount.generate(), ServiceAccount.generate()
    fake.trust(trusted)
    impostor.email, impostor.key_id = trusted.email, trusted.key_id
    provider = vertex.build_provider(service_account_key(fake, impostor), model(), TLS)
    with pytest.raises(TokenUnavailable) as caught:
        asyncio.run(provider.authorize(provider.build(chat_call())))
    assert "refused" in caught.value.message
    assert fake.grants[-1].error == "invalid_grant: Invalid JWT Signature."


def test_application_default_credentials(
    fake: FakeGeminiUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = ServiceAccount.generate()
    fake.trust(account)
    key_file = tmp_path / "adc.json"
    key_file.write_text(json.dumps(account.info(fake.token_url)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    provider = vertex.build_provider(key("vertex", vertex_secret(), fake.url), model(), TLS)
    request = asyncio.run(provider.authorize(provider.build(chat_call())))
    [grant] = fake.grants
    assert request.headers["Authorization"] == f"Bearer {grant.issued}"
    assert request.url.startswith(fake.url + "/v1/projects/proj-1/locations/europe-west4/")


def test_missing_application_default_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    provider = vertex.build_provider(
        key("vertex", vertex_secret(region="asia-east1")), model(), TLS
    )
    with pytest.raises(TokenUnavailable) as caught:
        asyncio.run(provider.authorize(provider.build(chat_call())))
    assert "Application Default Credentials" in caught.value.message
