"""CORS for the proxy, so browser clients (the dashboard's Playground) can call it.

`CorsApp` wraps the proxy ASGI app only when `proxy.cors.allow_origins` is non-empty; with
the default (empty) the proxy is not wrapped and sends no CORS header, so the hot path is
unchanged. A request whose `Origin` is allowed gets `Access-Control-Allow-Origin` (that
origin), `Vary: Origin` and the aisix headers exposed to scripts; its preflight (`OPTIONS`
with `Access-Control-Request-Method`) is answered 204 here. Credentials are never allowed:
callers authenticate with a bearer caller key, which a browser never attaches by itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aisix.asgi import Message, Receive, Scope, Send, header

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[Any]]
EXPOSED = (
    b"x-aisix-request-id, x-aisix-call-id, x-request-id, x-aisix-served-by, "
    b"x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    b"x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, "
    b"retry-after"
)
ALLOWED_METHODS = b"GET, POST"
_HEADER_LIST = re.compile(rb"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


class CorsApp:
    """The proxy app behind an origin check; see the module docstring."""

    def __init__(self, app: ASGIApp, allow_origins: list[str], max_age_secs: int) -> None:
        self.app = app
        self._any = "*" in allow_origins
        self._origins = frozenset(o.encode() for o in allow_origins if o != "*")
        self._max_age = str(max_age_secs).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if origin is None or not (self._any or origin in self._origins):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method"):
            await self._preflight(scope, origin, send)
            return
        added = [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", b"origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *added]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, origin: bytes, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-max-age", self._max_age),
            (b"vary", b"origin"),
            (b"content-length", b"0"),
        ]
        requested = header(scope, b"access-control-request-headers")
        if requested and _HEADER_LIST.match(requested.strip()):
            headers.append((b"access-control-allow-headers", requested.strip()))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
