"""The `azure-openai` provider-key secret (contract §5.1): a resource key, or Entra ID JSON.

A secret that starts with `{` is the Entra ID client-credentials triple
`{"tenant_id", "client_id", "client_secret", "token_url"?}` (`token_url` replaces
`https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`, so tests can run a local
fake); anything else is the resource's `api-key`. `parse` raises `ValueError` whose message
names the field at fault and never contains the secret; the credential objects hide their
secret parts from `repr`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: the Entra ID token endpoint of a tenant (v2.0, client-credentials grant)
DEFAULT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
#: the scope Azure OpenAI accepts tokens for
SCOPE = "https://cognitiveservices.azure.com/.default"

_ENTRA_FIELDS = ("tenant_id", "client_id", "client_secret")
#: a tenant is a GUID or a domain name (`contoso.onmicrosoft.com`); it becomes a URL segment
_TENANT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,254})$")
#: header-safe: printable ASCII without spaces
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True, slots=True)
class AzureKeyCredential:
    """The resource's key, sent as the `api-key` header."""

    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class EntraCredential:
    """An app registration's client credentials, minted into bearer tokens."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str = ""

    def __post_init__(self) -> None:
        if not self.token_url:
            url = DEFAULT_TOKEN_URL.format(tenant=self.tenant_id)
            object.__setattr__(self, "token_url", url)


AzureCredential = AzureKeyCredential | EntraCredential


def parse(secret: str) -> AzureCredential:
    """The credential a secret holds; `ValueError` (without the secret) if it is malformed."""
    text = secret.strip()
    if not text:
        raise ValueError("secret: empty")
    if text.startswith("{"):
        return _parse_entra(text)
    if not _HEADER_SAFE.match(text):
        raise ValueError(
            "secret: an azure-openai resource key must be printable ASCII without spaces"
        )
    return AzureKeyCredential(text)


def _parse_entra(text: str) -> EntraCredential:
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(
            'secret: not valid JSON (Entra ID: {"tenant_id","client_id","client_secret"})'
        ) from None
    if not isinstance(data, dict):  # unreachable for text starting with "{"; kept for mypy
        raise ValueError("secret: the Entra ID secret must be a JSON object")
    unknown = sorted(set(data) - {*_ENTRA_FIELDS, "token_url"})
    if unknown:
        known = ", ".join(sorted({*_ENTRA_FIELDS, "token_url"}))
        raise ValueError(f"secret: an unknown Entra ID field (the fields are {known})")
    for name in _ENTRA_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"secret: Entra ID field {name!r} must be a non-empty string")
    tenant, client = data["tenant_id"].strip(), data["client_id"].strip()
    if not _TENANT.match(tenant):
        raise ValueError("secret: tenant_id must be a tenant GUID or domain name")
    if not _HEADER_SAFE.match(client):
        raise ValueError("secret: client_id must be printable ASCII without spaces")
    token_url = data.get("token_url")
    if token_url is not None:
        if not isinstance(token_url, str) or not _is_http_url(token_url.strip()):
            raise ValueError("secret: token_url must be an absolute http(s) URL")
        token_url = token_url.strip()
    return EntraCredential(tenant, client, data["client_secret"], token_url or "")


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
