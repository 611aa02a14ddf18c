"""Entra ID token requests on a real socket: the provider's token path against the fake
identity provider over TLS, with the provider key's trust settings applied to it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest
import trustme

from aisix.providers.azure import build_provider
from aisix.providers.base import TLSConfig, UpstreamCall
from aisix.providers.tokens import TokenUnavailable
from aisix.resources import DirectModel, ProviderKey, validate_value
from fakes.azure_upstream import EntraSetup, FakeEntraID


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def setup() -> EntraSetup:
    return EntraSetup()


@pytest.fixture
def entra(ca: trustme.CA, setup: EntraSetup) -> Iterator[FakeEntraID]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    fake = FakeEntraID({setup.client_id: setup.client_secret}, tls=context).start()
    try:
        yield fake
    finally:
        fake.stop()


def authorize(secret: str, tls: TLSConfig) -> dict[str, str]:
    key = validate_value(
        "provider_keys",
        {
            "display_name": "az",
            "adapter": "azure-openai",
            "secret": secret,
            "api_base": "contoso",
        },
    )
    model = validate_value(
        "models",
        {"display_name": "a", "provider": "azure", "model_name": "d", "provider_key_id": "p"},
    )
    assert isinstance(key, ProviderKey) and isinstance(model, DirectModel)
    target = build_provider(key, model, tls)
    call = UpstreamCall("chat", False, "r", body={"model": "a", "messages": []})
    return asyncio.run(target.authorize(target.build(call))).headers


def test_tokens_over_tls_with_the_keys_ca(
    entra: FakeEntraID, setup: EntraSetup, ca: trustme.CA
) -> None:
    headers = authorize(setup.secret(entra), TLSConfig(ca_cert=ca.cert_pem.bytes().decode()))
    [token] = entra.issued_tokens()
    assert headers["Authorization"] == f"Bearer {token}"
    assert entra.token_requests == 1


def test_verify_false_also_reaches_the_token_endpoint(
    entra: FakeEntraID, setup: EntraSetup
) -> None:
    headers = authorize(setup.secret(entra), TLSConfig(verify=False))
    assert headers["Authorization"] == f"Bearer {entra.issued_tokens()[0]}"


def test_an_untrusted_token_endpoint_is_refused(entra: FakeEntraID, setup: EntraSetup) -> None:
    with pytest.raises(TokenUnavailable) as caught:
        authorize(setup.secret(entra), TLSConfig())
    assert caught.value.message.startswith(
        "Entra ID token request failed: could not reach the token endpoint"
    )
    assert caught.value.retryable
    assert setup.client_secret not in str(caught.value)
    assert entra.token_requests == 0 and entra.requests == []
