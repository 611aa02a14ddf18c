"""The `bedrock` secret (contract §5.1): static AWS keys with a region, or a region alone.

`{"access_key_id", "secret_access_key", "region", "session_token"?}` signs with those keys;
`{"region"}` alone uses the standard AWS credential chain (environment, shared config, web
identity / IRSA, instance metadata). Signing needs botocore, the optional extra
`aisix[bedrock]`: without it every bedrock secret is refused, naming the extra.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_FIELDS = frozenset({"access_key_id", "secret_access_key", "region", "session_token"})


@dataclass(frozen=True, slots=True)
class BedrockCredential:
    region: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @property
    def static(self) -> bool:
        return self.access_key_id is not None


MISSING_EXTRA = "adapter bedrock needs the optional extra: pip install 'aisix[bedrock]' (botocore)"


def parse(secret: str) -> BedrockCredential:
    if importlib.util.find_spec("botocore") is None:
        raise ValueError(MISSING_EXTRA)
    try:
        raw = json.loads(secret)
    except ValueError:
        raise ValueError(
            'secret: a bedrock secret is JSON {"region", "access_key_id"?, '
            '"secret_access_key"?, "session_token"?}'
        ) from None
    if not isinstance(raw, dict):
        raise ValueError("secret: a bedrock secret must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        raise ValueError(f"secret: an unknown bedrock secret field (the fields are {known})")
    for name, value in raw.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"secret: bedrock secret field {name!r} must be a non-empty string")
    region = raw.get("region")
    if region is None or not _REGION.match(region):
        raise ValueError('secret: bedrock secret needs "region", like "us-east-1"')
    key, secret_key = raw.get("access_key_id"), raw.get("secret_access_key")
    if (key is None) != (secret_key is None):
        raise ValueError(
            'secret: "access_key_id" and "secret_access_key" go together (or neither, for '
            "the AWS credential chain)"
        )
    if raw.get("session_token") is not None and key is None:
        raise ValueError('secret: "session_token" needs "access_key_id"')
    return BedrockCredential(region, key, secret_key, raw.get("session_token"))
