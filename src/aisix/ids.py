"""Fast UUIDv4 strings for request and event ids (not secrets).

`uuid.uuid4()` reads the OS CSPRNG and builds a UUID object on every call; request ids only
need uniqueness, so they come from the process PRNG with the version and variant bits set.
Credentials (rotated keys) keep using `secrets`.
"""

from __future__ import annotations

from random import getrandbits

_VERSION_MASK = ~(0xF000 << 64)
_VERSION_4 = 0x4000 << 64
_VARIANT_MASK = ~(0xC000 << 48)
_VARIANT_RFC4122 = 0x8000 << 48


def uuid4_str() -> str:
    n = (getrandbits(128) & _VERSION_MASK & _VARIANT_MASK) | _VERSION_4 | _VARIANT_RFC4122
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
