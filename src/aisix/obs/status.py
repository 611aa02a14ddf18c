"""The status listener's ASGI app: `/metrics`, `/status/config`, `/status/ready`, `/status/models`.

Unauthenticated and bound to loopback by default; it exposes no secret and no key (the
gateway redacts provider secrets from `/status/models`' `last_error`).
`/status/ready` (and `/readyz`, `/livez`) answer as `aisix.obs.health` says, `?verbose` too.
Also `StoreOutage`, which tells admin health how long the resource store has been unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from aisix.asgi import JSON_HEADERS, TEXT_HEADERS, Receive, Scope, Send, send_response
from aisix.obs import health

_HEALTH_PATHS = frozenset({"/status/ready", "/readyz", "/livez"})
PROMETHEUS_TYPE = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
_ALLOW = [(b"allow", b"GET, HEAD")]


class StoreOutage:
    """Since when the store has been unreachable, from observations (health reads, reloads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_since: float | None = None

    def observe(self, connected: bool) -> float:
        """Record the store's state now; return how long it has been unreachable (0 if up)."""
        now = self._clock()
        if connected:
            self._down_since = None
            return 0.0
        if self._down_since is None:
            self._down_since = now
        return now - self._down_since


class StatusApp:
    def __init__(
        self,
        metrics_path: str,
        render_metrics: Callable[[], Awaitable[bytes]],
        config_status: Callable[[], dict[str, Any]],
        models_status: Callable[[], list[dict[str, Any]]],
        draining: Callable[[], bool],
        loaded: Callable[[], bool],
    ) -> None:
        self._draining = draining
        self._loaded = loaded
        self._metrics_path = metrics_path
        self._render_metrics = render_metrics
        self._routes: dict[str, Callable[[], tuple[int, bytes, list[tuple[bytes, bytes]]]]] = {
            metrics_path: lambda: (200, b"", PROMETHEUS_TYPE),  # rendered in __call__
            "/status/config": lambda: (200, orjson.dumps(config_status()), JSON_HEADERS),
            "/status/models": lambda: (200, orjson.dumps(models_status()), JSON_HEADERS),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in _HEALTH_PATHS and scope["method"] in ("GET", "HEAD"):
            status, body = health.answer(path, scope, self._draining(), self._loaded())
            await send_response(send, status, body, TEXT_HEADERS)
            return
        route = self._routes.get(path)
        if route is None:
            await send_response(send, 404, b'{"error_msg": "resource not found"}', JSON_HEADERS)
            return
        if scope["method"] not in ("GET", "HEAD"):
            body = b'{"error_msg": "method not allowed"}'
            await send_response(send, 405, body, JSON_HEADERS, _ALLOW)
            return
        status, body, headers = route()
        if scope["path"] == self._metrics_path:
            body = await self._render_metrics()  # may ask the other workers
        await send_response(send, status, body, headers)
