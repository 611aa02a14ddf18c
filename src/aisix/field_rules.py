"""Field rules shared by the resource models: text, header, URL and provider-secret checks.

Each function takes a raw value and returns it unchanged or raises `ValueError` with an
operator-readable message (pydantic prefixes the field path). They exist because values the
models once accepted broke traffic later: a CR/LF in a display name or header value, a
non-ASCII api_base host, a `file://` URL, a secret that is not in its adapter's format
(contract §5.1). A secret-format message never contains the secret or any part of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

#: a control character (C0, DEL, C1): never valid in a name, header or URL
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: RFC 9110 token: the characters a header name may use
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: a header value: visible ASCII / obs-text, with inner spaces and tabs (no CR, LF, NUL)
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
#: a plain API key: visible ASCII, no spaces (it travels in a header)
_PLAIN_SECRET = re.compile(r"^[\x21-\x7e]+$")
MAX_URL_LENGTH = 2048


def no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("may not contain control characters (CR, LF, tab, NUL, ...)")
    return value


def header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{_shown(name)} is not a valid header name")
    return name


def header_value(name: str, value: str) -> str:
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError(f"value of {_shown(name)} may not contain CR, LF or control characters")
    return value


def http_url(value: str) -> str:
    """An absolute http(s) URL with an ASCII host, no spaces, no credentials, no fragment."""
    if not value or len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be an absolute http(s) URL of at most {MAX_URL_LENGTH} chars")
    if _CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain spaces or control characters")
    if not value.isascii():
        raise ValueError("must be ASCII (write an internationalised host in punycode)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (bad host or port)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host (http://host[:port]/path)")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (put them in secret)")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a #fragment")
    if port == 0:
        raise ValueError("port must be between 1 and 65535")
    return value


def _shown(text: str) -> str:
    """A short, safe rendering of an operator-supplied name for a message."""
    return repr(text[:64])


# --- provider secrets (contract §5.1) ------------------------------------------------------

_AZURE_FIELDS: dict[str, type] = {
    "tenant_id": str,
    "client_id": str,
    "client_secret": str,
    "token_url": str,
}
_AZURE_REQUIRED = ("tenant_id", "client_id", "client_secret")
_VERTEX_FIELDS: dict[str, type] = {
    "project": str,
    "region": str,
    "service_account_json": dict,
    "access_token": str,
    "token_url": str,
}
_BEDROCK_FIELDS: dict[str, type] = {
    "access_key_id": str,
    "secret_access_key": str,
    "region": str,
    "session_token": str,
}


class SecretFormatError(ValueError):
    """A provider secret is not in its adapter's format; the message never echoes it."""


def check_secret(adapter: str, secret: str) -> None:
    """Raise SecretFormatError when `secret` does not fit `adapter` (§5.1)."""
    if adapter in ("openai", "anthropic", "gemini"):
        _plain(adapter)(secret)
    elif adapter == "azure-openai":
        if secret.lstrip().startswith("{"):
            _check_json(secret, "azure-openai Entra ID", _AZURE_FIELDS, _AZURE_REQUIRED)
        else:
            _plain(adapter)(secret)
    elif adapter == "vertex":
        fields = _check_json(secret, "vertex", _VERTEX_FIELDS, ("project", "region"))
        if "service_account_json" in fields and "access_token" in fields:
            raise SecretFormatError("vertex: give service_account_json or access_token, not both")
    elif adapter == "bedrock":
        fields = _check_json(secret, "bedrock", _BEDROCK_FIELDS, ("region",))
        keys = {"access_key_id", "secret_access_key"} & fields.keys()
        if len(keys) == 1:
            raise SecretFormatError(
                "bedrock: access_key_id and secret_access_key go together "
                "(or give region alone for the AWS credential chain)"
            )
        if "session_token" in fields and not keys:
            raise SecretFormatError("bedrock: session_token needs access_key_id")


def secret_token_url(secret: str) -> str | None:
    """The `token_url` inside a JSON secret (Entra ID, service account), if any."""
    if not secret.lstrip().startswith("{"):
        return None
    try:
        parsed = orjson.loads(secret)
    except orjson.JSONDecodeError:
        return None
    url = parsed.get("token_url") if isinstance(parsed, dict) else None
    return url if isinstance(url, str) else None


def _plain(adapter: str) -> Callable[[str], None]:
    def check(secret: str) -> None:
        if not _PLAIN_SECRET.fullmatch(secret):
            raise SecretFormatError(
                f"{adapter}: the API key must be visible ASCII without spaces, line breaks "
                "or control characters"
            )

    return check


def _check_json(
    secret: str, what: str, fields: dict[str, type], required: tuple[str, ...]
) -> dict[str, Any]:
    try:
        parsed = orjson.loads(secret)
    except orjson.JSONDecodeError:
        raise SecretFormatError(f"{what}: must be a JSON object (a string holding JSON)") from None
    if not isinstance(parsed, dict):
        raise SecretFormatError(f"{what}: must be a JSON object")
    for name, value in parsed.items():
        expected = fields.get(name)
        if expected is None:
            known = ", ".join(fields)
            raise SecretFormatError(f"{what}: unknown field (the fields are {known})")
        if not isinstance(value, expected) or (expected is str and not value):
            kind = "an object" if expected is dict else "a non-empty string"
            raise SecretFormatError(f'{what}: field "{name}" must be {kind}')
    missing = [name for name in required if name not in parsed]
    if missing:
        raise SecretFormatError(f'{what}: missing field "{missing[0]}"')
    token_url = parsed.get("token_url")
    if token_url is not None:
        try:
            http_url(token_url)
        except ValueError as exc:
            raise SecretFormatError(f"{what}: token_url {exc}") from None
    return parsed
