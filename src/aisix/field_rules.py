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
from urllib.parse import urlsplit

import orjson

from aisix.credentials import anthropic as anthropic_secret
from aisix.credentials import azure as azure_secret
from aisix.credentials import bedrock as bedrock_secret
from aisix.credentials import gemini as gemini_secret
from aisix.credentials import vertex as vertex_secret

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


_BARE_HOST = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?(?:/\S*)?$"
)


def api_base(value: str) -> str:
    """An absolute http(s) URL, or a bare host / Azure resource name (`contoso`,
    `contoso.openai.azure.com`): the adapter rules decide which adapters take a bare one."""
    if "://" in value:
        return http_url(value)
    if not value.isascii() or not _BARE_HOST.match(value) or len(value) > MAX_URL_LENGTH:
        raise ValueError("must be an http:// or https:// URL")
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


class SecretFormatError(ValueError):
    """A provider secret is not in its adapter's format; the message never echoes it."""


_SECRET_PARSERS: dict[str, Callable[[str], object]] = {
    "anthropic": anthropic_secret.parse,
    "azure-openai": azure_secret.parse,
    "gemini": gemini_secret.parse,
    "vertex": vertex_secret.parse,
    "bedrock": bedrock_secret.parse,
}


def check_secret(adapter: str, secret: str) -> None:
    """Raise SecretFormatError when `secret` does not fit `adapter` (§5.1): the adapter's own
    parser (`aisix.credentials.<adapter>`, which the provider uses too) decides."""
    parser = _SECRET_PARSERS.get(adapter)
    if parser is None:  # openai: any visible placeholder
        _plain(adapter)(secret)
        return
    try:
        parser(secret)
    except ValueError as exc:
        raise SecretFormatError(f"{adapter}: {str(exc).removeprefix('secret: ')}") from None


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
