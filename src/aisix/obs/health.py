"""Liveness and readiness answers shared by the proxy, admin and status listeners.

`/livez` is 200 `ok` until a shutdown starts (then 503 `draining`); `/readyz` and
`/status/ready` are 200 `ok` once a snapshot is loaded and no shutdown is under way, 503
`never_loaded` before the first snapshot and 503 `draining` during a shutdown. With
`?verbose` the body lists each check as AISIX (and Kubernetes) do: `[+]ping ok`,
`[-]config failed: never_loaded`, then `livez check passed` / `readyz check failed`.
`HealthFront` puts `/livez` and `/readyz` in front of another ASGI app (the admin API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aisix.asgi import JSON_HEADERS, TEXT_HEADERS, Receive, Scope, Send, send_response

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _verbose(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return any(part.split(b"=", 1)[0] == b"verbose" for part in query.split(b"&"))


def livez(draining: bool, verbose: bool) -> tuple[int, bytes]:
    if not verbose:
        return (503, b"draining") if draining else (200, b"ok")
    shutdown = b"[-]shutdown failed: draining\n" if draining else b"[+]shutdown ok\n"
    checks = b"[+]ping ok\n" + shutdown
    if draining:
        return 503, checks + b"livez check failed\n"
    return 200, checks + b"livez check passed\n"


def readyz(draining: bool, loaded: bool, verbose: bool) -> tuple[int, bytes]:
    if not verbose:
        if draining:
            return 503, b"draining"
        return (200, b"ok") if loaded else (503, b"never_loaded")
    checks = b"[-]shutdown failed: draining\n" if draining else b"[+]shutdown ok\n"
    checks += b"[+]config ok\n" if loaded else b"[-]config failed: never_loaded\n"
    if draining or not loaded:
        return 503, checks + b"readyz check failed\n"
    return 200, checks + b"readyz check passed\n"


def answer(path: str, scope: Scope, draining: bool, loaded: bool) -> tuple[int, bytes]:
    """The answer for `/livez`, or for `/readyz` / `/status/ready` (any other path)."""
    if path == "/livez":
        return livez(draining, _verbose(scope))
    return readyz(draining, loaded, _verbose(scope))


class HealthFront:
    """`/livez` and `/readyz` answered here; every other request goes to `app`."""

    def __init__(
        self, app: ASGIApp, draining: Callable[[], bool], loaded: Callable[[], bool]
    ) -> None:
        self.app = app
        self.draining = draining
        self.loaded = loaded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] == "http" and path in ("/livez", "/readyz"):
            if scope["method"] not in ("GET", "HEAD"):
                refusal = b'{"error_msg": "method not allowed"}'
                await send_response(send, 405, refusal, [*JSON_HEADERS, (b"allow", b"GET, HEAD")])
                return
            status, body = answer(path, scope, self.draining(), self.loaded())
            await send_response(send, status, body, TEXT_HEADERS)
            return
        await self.app(scope, receive, send)
