"""The `anthropic` adapter's provider-key secret (contract §5.1): the API key itself.

Any non-empty value is accepted (a placeholder for endpoints without auth), trimmed; it must
fit in one HTTP header value (no whitespace inside, no control characters), because it is
sent as `x-api-key`. Errors never contain the secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AnthropicCredential:
    """The API key sent as `x-api-key`; its repr never shows it."""

    api_key: str = field(repr=False)


def parse(secret: str) -> AnthropicCredential:
    """The credential in `secret`; `ValueError` (without the secret) if it is unusable."""
    if not isinstance(secret, str):
        raise ValueError("anthropic secret must be a string (the API key)")
    key = secret.strip()
    if not key:
        raise ValueError("anthropic secret must be a non-empty API key")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(
            "anthropic secret must be one API key without spaces or control characters"
        )
    return AnthropicCredential(api_key=key)
