"""Caller authentication (contract §6.2): header parsing, hash lookup, disabled and expiry.

The plaintext token is hashed once and dropped; only the hash is ever compared or kept.
Lookup is a dict hit in the current snapshot, with no store I/O.
"""

from __future__ import annotations

import hashlib

from aisix.asgi import Scope
from aisix.errors import Unauthorized
from aisix.snapshot import KeyEntry, Snapshot

_MISSING = "missing or malformed Authorization header"


def bearer_token(scope: Scope) -> str:
    """The caller token from `Authorization: Bearer` or, only without it, `x-api-key`."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
            break
        if name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized(_MISSING)
        return token.decode("latin-1")
    if api_key is not None and api_key.strip():
        return api_key.strip().decode("latin-1")
    raise Unauthorized(_MISSING)


def authenticate(scope: Scope, snapshot: Snapshot, now: float) -> KeyEntry:
    token = bearer_token(scope)
    digest = hashlib.sha256(token.encode("latin-1")).hexdigest()
    match = snapshot.keys_by_hash.get(digest)
    if match is None or (match.valid_until is not None and now > match.valid_until):
        raise Unauthorized("invalid API key")
    key = match.key
    if key.value.disabled:
        raise Unauthorized("API key has been disabled", code="api_key_disabled")
    if key.expires_at is not None and now > key.expires_at:
        raise Unauthorized("API key has expired", code="api_key_expired")
    return key
