"""The `vertex` provider-key secret (contract §5.1): project, region and how to authenticate.

A JSON object `{"project", "region"}` plus one of: `access_token` (a bearer token used as
given), `service_account_json` (a service-account key, as an object or a JSON string, minted
into `cloud-platform` tokens; `token_url` replaces its `token_uri` so tests can run a local
fake), or nothing (Application Default Credentials: workload identity, the metadata server,
`GOOGLE_APPLICATION_CREDENTIALS`). `parse` raises `ValueError` whose message names the field at
fault and never contains the secret; credentials hide their secret parts from `repr`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: the scope Vertex AI accepts tokens for
SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_FIELDS = frozenset({"project", "region", "access_token", "service_account_json", "token_url"})
#: a project id (or number) and a region become URL segments and a host name
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9:.-]{0,127}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")
_SA_REQUIRED = ("client_email", "private_key")


@dataclass(frozen=True, slots=True)
class VertexCredential:
    """Where the models live and how requests are authenticated."""

    project: str
    region: str
    #: a bearer token used as given (no refresh)
    access_token: str | None = field(default=None, repr=False)
    #: a service-account key file's fields, minted into tokens with google-auth
    service_account: dict[str, Any] | None = field(default=None, repr=False)
    #: replaces the service account's `token_uri` (a local fake OAuth server in tests)
    token_url: str | None = None

    @property
    def kind(self) -> str:
        """`access_token`, `service_account` or `adc` (for logs and errors: no secret)."""
        if self.access_token is not None:
            return "access_token"
        return "service_account" if self.service_account is not None else "adc"


def parse(secret: str) -> VertexCredential:
    """The credential a secret holds; `ValueError` (without the secret) if it is malformed."""
    try:
        data = json.loads(secret)
    except ValueError:
        raise ValueError(
            'secret: not valid JSON (vertex: {"project","region"} with "service_account_json"'
            ' or "access_token", or neither for Application Default Credentials)'
        ) from None
    if not isinstance(data, dict):
        raise ValueError("secret: the vertex secret must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        raise ValueError(f"secret: an unknown vertex field (the fields are {known})")
    project = _string(data, "project")
    region = _string(data, "region")
    if not _PROJECT.match(project):
        raise ValueError("secret: project must be a Google Cloud project id")
    if not _REGION.match(region):
        raise ValueError("secret: region must be a Google Cloud region like us-central1")
    if "access_token" in data and "service_account_json" in data:
        raise ValueError("secret: give either access_token or service_account_json, not both")
    token_url = _token_url(data.get("token_url"))
    if "access_token" in data:
        token = _string(data, "access_token")
        if not _HEADER_SAFE.match(token):
            raise ValueError("secret: access_token must be printable ASCII without spaces")
        return VertexCredential(project, region, access_token=token, token_url=token_url)
    if "service_account_json" in data:
        account = _service_account(data["service_account_json"])
        return VertexCredential(project, region, service_account=account, token_url=token_url)
    return VertexCredential(project, region, token_url=token_url)


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"secret: vertex field {name!r} must be a non-empty string")
    return value.strip()


def _service_account(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError("secret: service_account_json is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("secret: service_account_json must be a service-account key object")
    if raw.get("type", "service_account") != "service_account":
        raise ValueError('secret: service_account_json must have "type": "service_account"')
    for name in _SA_REQUIRED:
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"secret: service_account_json field {name!r} is missing")
    if "BEGIN" not in raw["private_key"] or "PRIVATE KEY" not in raw["private_key"]:
        raise ValueError("secret: service_account_json private_key is not a PEM private key")
    token_uri = raw.get("token_uri")
    if token_uri is not None and (not isinstance(token_uri, str) or not _is_http_url(token_uri)):
        raise ValueError("secret: service_account_json token_uri must be an http(s) URL")
    return dict(raw)


def _token_url(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not _is_http_url(raw.strip()):
        raise ValueError("secret: token_url must be an absolute http(s) URL")
    return raw.strip()


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
