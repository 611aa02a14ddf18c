"""The `gemini` provider-key secret (contract §5.1): a Google AI Studio API key.

It is sent as the `x-goog-api-key` header, so it must be printable ASCII without spaces (any
non-empty placeholder works for a keyless endpoint). `parse` raises `ValueError` whose message
never contains the secret; the credential hides its key from `repr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: header-safe: printable ASCII without spaces
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True, slots=True)
class GeminiCredential:
    """The API key, sent as `x-goog-api-key`."""

    api_key: str = field(repr=False)


def parse(secret: str) -> GeminiCredential:
    """The API key a secret holds; `ValueError` (without the secret) if it is unusable."""
    text = secret.strip()
    if not text:
        raise ValueError("secret: empty")
    if not _HEADER_SAFE.match(text):
        raise ValueError("secret: a gemini API key must be printable ASCII without spaces")
    return GeminiCredential(text)
