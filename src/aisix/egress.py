"""The upstream egress policy: which hosts a provider key's `api_base` may point at.

`EgressPolicy.check(host)` is pure (no DNS, no I/O): it answers None when `host` may be
called, else the reason as one operator-readable line. The admin API checks it when a
provider key is written (a clear 400); the transport can check it again on connect with the
resolved address, so a name that resolves into a denied network is refused too. By default
every host is allowed except the link-local metadata networks of cloud providers
(`DEFAULT_DENIED_CIDRS`); `upstream.allowed_hosts` narrows it to a list of names, `*.suffix`
wildcards and CIDRs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: link-local (instance metadata at 169.254.169.254 on AWS, GCP, Azure, ...), the AWS IPv6
#: metadata endpoint and the IPv6 link-local range
DEFAULT_DENIED_CIDRS = ("169.254.0.0/16", "fd00:ec2::254/128", "fe80::/10")


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    #: empty: every host not denied; else only these names, `*.suffix` wildcards and networks
    allowed_names: frozenset[str] = frozenset()
    allowed_suffixes: tuple[str, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()
    denied_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def build(cls, allowed_hosts: Iterable[str], denied_cidrs: Iterable[str]) -> EgressPolicy:
        """From the settings' lists (already validated: CIDRs parse)."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in allowed_hosts:
            entry = entry.strip().lower().strip("[]")
            if entry.startswith("*."):
                suffixes.append(entry[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        denied = tuple(ipaddress.ip_network(c, strict=False) for c in denied_cidrs)
        return cls(frozenset(names), tuple(suffixes), tuple(networks), denied)

    @property
    def restricts_names(self) -> bool:
        return bool(self.allowed_names or self.allowed_suffixes or self.allowed_networks)

    def check(self, host: str) -> str | None:
        """None when `host` (a name or an IP literal) may be called, else why not."""
        bare = host.strip().lower().strip("[]").rstrip(".")
        address = _address(bare)
        if address is not None:
            for network in self.denied_networks:
                if address.version == network.version and address in network:
                    return f"host {bare} is in a denied network ({network}, upstream.denied_cidrs)"
            if not self.restricts_names or any(
                address.version == n.version and address in n for n in self.allowed_networks
            ):
                return None
            return f"host {bare} is not in upstream.allowed_hosts"
        if not self.restricts_names or bare in self.allowed_names:
            return None
        if any(bare.endswith(suffix) for suffix in self.allowed_suffixes):
            return None
        return f"host {bare} is not in upstream.allowed_hosts"

    def check_resolved(self, ip: str) -> str | None:
        """On connect: None when a resolved address may be called, else why not (a name that
        resolves into a denied network is refused even though the name itself passed)."""
        address = _address(ip)
        if address is None:
            return None
        for network in self.denied_networks:
            if address.version == network.version and address in network:
                return f"the upstream resolves into a denied network ({network})"
        return None


def _address(text: str) -> IPAddress | None:
    """An IP literal (zone ids dropped, IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


ALLOW_ALL = EgressPolicy()
