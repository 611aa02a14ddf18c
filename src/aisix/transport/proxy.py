"""Egress proxy selection and the bytes a proxied connection needs.

`proxy_for(url, settings, environ)` answers, once per provider build (never per request),
which proxy an upstream URL goes through: `upstream.proxy.url`, else with `from_env` the
environment's `https_proxy`/`HTTPS_PROXY` (https URLs) or `http_proxy`/`HTTP_PROXY` (http
URLs), `all_proxy` as a fallback, and `NO_PROXY`/`no_proxy` plus `upstream.proxy.no_proxy`
naming hosts that go direct (curl's rules: `*`, a host or domain suffix, an IP or CIDR, an
optional `:port`). `ProxyURL` is a parsed `http://[user:pass@]host:port` with its
`Proxy-Authorization` header; it never appears in messages (it may hold a password).
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from aisix.settings import UpstreamProxy
from aisix.transport.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class ProxyURL:
    host: str
    port: int
    #: the `Proxy-Authorization: Basic …` header line (CRLF-terminated), or b""
    auth_line: bytes


@lru_cache(maxsize=64)
def parse_proxy(url: str) -> ProxyURL:
    """Parse `http://[user:pass@]host[:port]` (port 80 when absent)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    try:
        port = parts.port or 80
    except ValueError:
        raise LocalProtocolError("the egress proxy URL has a bad port") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise LocalProtocolError("the egress proxy URL must be http://[user:pass@]host:port")
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"Proxy-Authorization: Basic " + base64.b64encode(pair) + b"\r\n"
    return ProxyURL(parts.hostname, port, auth)


def proxy_for(
    url: str, settings: UpstreamProxy, environ: Mapping[str, str] | None = None
) -> str | None:
    """The proxy URL for upstream `url`, or None for a direct connection."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    proxy = settings.url
    no_proxy: list[str] = list(settings.no_proxy)
    if settings.from_env:
        if proxy is None:
            proxy = _env(env, f"{scheme}_proxy") or _env(env, "all_proxy")
        no_proxy.extend(_split(_env(env, "no_proxy") or ""))
    if not proxy or bypasses(host, port, no_proxy):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    if not proxy.lower().startswith("http://"):
        raise ValueError("only http:// egress proxies are supported (got another scheme)")
    return proxy


def bypasses(host: str, port: int, entries: Sequence[str]) -> bool:
    """Whether `host:port` matches a NO_PROXY entry (curl semantics, plus CIDR blocks)."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.removeprefix("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        inner, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inner, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or env.get(name.upper())
    return value.strip() if value and value.strip() else None


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
