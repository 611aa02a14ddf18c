"""The client IP used for `allowed_cidrs`, with nginx `real_ip` semantics (`proxy.real_ip`).

Without trusted proxies the peer address is the client. When the peer is trusted, the
configured header is read: non-recursive takes its last address; recursive walks from the
right past trusted addresses and takes the first untrusted one.
"""

from __future__ import annotations

import functools
import ipaddress

from aisix.asgi import Scope, header
from aisix.settings import RealIP

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientIPResolver:
    __slots__ = ("_header", "_recursive", "_trusted")

    def __init__(self, config: RealIP) -> None:
        self._trusted = tuple(ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies)
        self._header = config.header.lower().encode()
        self._recursive = config.recursive

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if not self._trusted or peer is None:
            return peer
        try:
            peer_ip = ipaddress.ip_address(peer)
        except ValueError:
            return peer
        if not self._is_trusted(peer_ip):
            return peer
        raw = header(scope, self._header)
        if not raw:
            return peer
        hops = [h.strip() for h in raw.decode("latin-1").split(",") if h.strip()]
        if not self._recursive:
            return hops[-1] if hops else peer
        for hop in reversed(hops):
            try:
                if not self._is_trusted(ipaddress.ip_address(hop)):
                    return hop
            except ValueError:
                return hop
        return hops[0] if hops else peer


@functools.lru_cache(maxsize=4096)
def parse_ip(value: str | None) -> IPAddress | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None
