"""Outbound connection options from `upstream.*` (AISIX keys), ready for the transport.

`client_ssl_context` builds the one TLS context every upstream handshake uses from
`upstream.tls` (CA bundle added to the system store, client certificate for mutual TLS,
`verify: false`); `None` means "the system defaults". `apply_tcp_keepalive` sets
`tcp_keepalive_secs` / `_interval_secs` / `_retries` on a connected socket. The gateway
builds the context at boot (a missing or bad file is a startup error naming the key); the
HTTP/1.1 transport applies both to the connections it opens.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from aisix.settings import UpstreamSettings


class UpstreamOptionError(ValueError):
    """An `upstream.tls` file cannot be used; the message names the key."""


def client_ssl_context(
    upstream: UpstreamSettings, resolve: Callable[[str], Path] = Path
) -> ssl.SSLContext | None:
    tls = upstream.tls
    if tls.ca_file is None and tls.client_cert_file is None and tls.verify:
        return None
    context = ssl.create_default_context()
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=resolve(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamOptionError(f"upstream.tls.ca_file: {exc}") from None
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        try:
            context.load_cert_chain(resolve(tls.client_cert_file), resolve(tls.client_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamOptionError(f"upstream.tls.client_cert_file: {exc}") from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def apply_tcp_keepalive(sock: socket.socket, upstream: UpstreamSettings) -> None:
    """TCP keep-alive probes on one upstream socket (`tcp_keepalive_secs: 0` turns them off)."""
    if upstream.tcp_keepalive_secs == 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (
        ("TCP_KEEPIDLE", upstream.tcp_keepalive_secs),
        ("TCP_KEEPINTVL", upstream.tcp_keepalive_interval_secs),
        ("TCP_KEEPCNT", upstream.tcp_keepalive_retries),
    )
    for name, value in options:
        option = getattr(socket, name, None)
        if option is not None:  # Linux has all three; other platforms may lack some
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
