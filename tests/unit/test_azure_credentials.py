"""The azure-openai secret parser (contract §5.1): resource key or Entra ID JSON."""

from __future__ import annotations

import json

import pytest

from aisix.credentials import azure
from aisix.credentials.azure import AzureKeyCredential, EntraCredential

CLIENT_SECRET = "cs~Very.Secret-Value_123"
ENTRA = {
    "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "client_id": "00000000-1111-2222-3333-444444444444",
    "client_secret": CLIENT_SECRET,
}


def test_a_plain_secret_is_the_resource_key() -> None:
    cred = azure.parse("  0123456789abcdef0123456789abcdef\n")
    assert cred == AzureKeyCredential("0123456789abcdef0123456789abcdef")
    assert "0123456789abcdef" not in repr(cred)


def test_entra_json_with_the_default_token_endpoint() -> None:
    cred = azure.parse(json.dumps(ENTRA))
    assert isinstance(cred, EntraCredential)
    assert cred.tenant_id == ENTRA["tenant_id"]
    assert cred.client_id == ENTRA["client_id"]
    assert cred.client_secret == CLIENT_SECRET
    assert cred.token_url == (
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
    )
    assert CLIENT_SECRET not in repr(cred)


def test_entra_token_url_overrides_the_endpoint() -> None:
    cred = azure.parse(json.dumps({**ENTRA, "token_url": " http://127.0.0.1:4321/t/token "}))
    assert isinstance(cred, EntraCredential)
    assert cred.token_url == "http://127.0.0.1:4321/t/token"


def test_domain_tenants_are_accepted() -> None:
    cred = azure.parse(json.dumps({**ENTRA, "tenant_id": "contoso.onmicrosoft.com"}))
    assert isinstance(cred, EntraCredential)
    assert "/contoso.onmicrosoft.com/oauth2/v2.0/token" in cred.token_url


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "secret: empty"),
        ("   ", "secret: empty"),
        ("key with spaces " + CLIENT_SECRET, "printable ASCII"),
        ("key\r\nInjected: " + CLIENT_SECRET, "printable ASCII"),
        ('{"tenant_id": "t", "client_secret": "' + CLIENT_SECRET, "not valid JSON"),
        ("{" + CLIENT_SECRET + "}", "not valid JSON"),
        (json.dumps({**ENTRA, "client_secret": ""}), "'client_secret' must be a non-empty"),
        (json.dumps({k: v for k, v in ENTRA.items() if k != "client_id"}), "'client_id'"),
        (json.dumps({**ENTRA, "tenant_id": 7}), "'tenant_id' must be a non-empty string"),
        (json.dumps({**ENTRA, "tenant_id": "../evil"}), "tenant_id must be a tenant GUID"),
        (json.dumps({**ENTRA, "tenant_id": "a/b?c"}), "tenant_id must be a tenant GUID"),
        (json.dumps({**ENTRA, "client_id": "a b"}), "client_id must be printable"),
        (json.dumps({**ENTRA, "token_url": "ftp://x/token"}), "token_url must be an absolute"),
        (json.dumps({**ENTRA, "token_url": "/relative"}), "token_url must be an absolute"),
        (json.dumps({**ENTRA, "token_url": 3}), "token_url must be an absolute"),
        (json.dumps({**ENTRA, "scope": "x"}), "an unknown Entra ID field"),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        azure.parse(secret)
    assert message in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # no JSON decoder error quoting the text
