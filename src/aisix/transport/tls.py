"""One `SSLContext` per distinct upstream trust setting, shared by the whole process.

`context_for(TLSConfig)` builds the context for a value once and keeps it in a small LRU:
a snapshot rebuild (every admin write) hands the transport equal `TLSConfig` values, so the
pools keyed by them, and their warm connections, survive; two models on one provider key
share one pool. Context creation reads CA and client-certificate files; a setting that cannot
be loaded raises `ConnectError` naming what is wrong (paths, never key material).
"""

from __future__ import annotations

import ssl
from functools import lru_cache

from aisix.providers.base import TLSConfig
from aisix.transport.errors import ConnectError

#: distinct trust settings kept at once (one per provider key's `tls` at most)
CACHE_SIZE = 256


@lru_cache(maxsize=CACHE_SIZE)
def _build(config: TLSConfig) -> ssl.SSLContext:
    if not config.verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_cert is not None or config.ca_file is not None:
        # a provider's own CA replaces the system store (a private upstream's chain)
        context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_cert)
    else:
        context = ssl.create_default_context()
    if config.client_cert_file is not None:
        context.load_cert_chain(config.client_cert_file, config.client_key_file)
    return context


def context_for(config: TLSConfig) -> ssl.SSLContext:
    """The shared context for `config`; ConnectError if its files or PEM cannot be used."""
    try:
        return _build(config)
    except FileNotFoundError as exc:
        raise ConnectError(f"upstream TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConnectError(f"upstream TLS settings cannot be loaded ({reason})") from None


def cache_info() -> tuple[int, int]:
    """(hits, misses) of the context cache, for tests and diagnostics."""
    info = _build.cache_info()
    return info.hits, info.misses
