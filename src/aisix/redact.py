"""Secret redaction: every known provider secret becomes `***` in text that leaves the gateway.

An upstream may echo the credentials it was sent (its 4xx message, a mid-stream error event),
and that text reaches clients, `/status/models` `last_error` and logs. `Redactor` is built
once per snapshot from the provider keys' secrets (for JSON secrets — Entra ID, service
accounts, AWS keys — every credential field inside, and each line of a PEM key) and replaces
each occurrence with one regex pass. `install` makes it the process's current redactor (the
gateway calls it on every snapshot publish, keeping the previous snapshot's secrets too, for
requests still running on it); `current()` is what the error paths and `RedactingFilter`
(every log record) use. Secrets shorter than `MIN_SECRET_LENGTH` are not redacted: masking
every "x" of a placeholder key would garble messages and protect nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import orjson

MASK = "***"
MIN_SECRET_LENGTH = 6
#: fields of a JSON provider secret whose values are credentials (contract §5.1)
_CREDENTIAL_FIELDS = frozenset(
    {
        "client_secret",
        "access_token",
        "secret_access_key",
        "session_token",
        "access_key_id",
        "private_key",
        "private_key_id",
        "refresh_token",
    }
)
_PEM_LINE = 16


class Redactor:
    """Replaces every one of a fixed set of secrets by `***`."""

    __slots__ = ("_pattern", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        words = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        #: the strings redacted, longest first (so a secret containing another wins)
        self.secrets = tuple(sorted(words, key=lambda s: (-len(s), s)))
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if words else None

    @classmethod
    def from_provider_secrets(cls, secrets: Iterable[str]) -> Redactor:
        """From provider key `secret` values: each whole, plus the credentials inside JSON."""
        found: list[str] = []
        for secret in secrets:
            found.append(secret)
            if secret.lstrip().startswith("{"):
                found += _json_credentials(secret)
        return cls(found)

    def merged(self, other: Redactor) -> Redactor:
        return Redactor((*self.secrets, *other.secrets))

    def redact(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def redact_value(self, value: Any) -> Any:
        """Strings anywhere in a JSON-like value (dicts, lists) redacted; other values kept."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        return value


def _json_credentials(secret: str) -> list[str]:
    try:
        parsed = orjson.loads(secret)
    except orjson.JSONDecodeError:
        return []
    found: list[str] = []
    _walk(parsed, found)
    return found


def _walk(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        for name, inner in value.items():
            if name in _CREDENTIAL_FIELDS and isinstance(inner, str):
                found.append(inner)
                found += [ln for ln in inner.splitlines() if len(ln.strip()) >= _PEM_LINE]
            else:
                _walk(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _walk(inner, found)


NO_SECRETS = Redactor()
_current = NO_SECRETS


def install(redactor: Redactor) -> None:
    """Make `redactor` the process's current one (called on every snapshot publish)."""
    global _current
    _current = redactor


def current() -> Redactor:
    return _current


class RedactingFilter(logging.Filter):
    """Redacts the current secrets from every log record it sees (message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = _current
        if redactor._pattern is None:
            return True
        message = record.getMessage()
        cleaned = redactor.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
