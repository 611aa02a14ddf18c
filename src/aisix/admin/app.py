"""The admin listener as a raw ASGI app (contract §4): auth, routing, bodies, error envelope.

`build_admin_app` wires the route table (CRUD from `aisix.admin.crud`, then the handlers
other modules pass as `extra_routes`) behind one request path: unauthenticated endpoints
(`/livez`, `/admin/openapi.json`, `/admin/docs`, the `/ui` dashboard's static files) →
admin key check → route (404 / 405) →
file-managed writes refused (405) → body read under the 10 MiB limit (413) → handler.
Every error is `{"error_msg": ...}`; no message carries a key or a provider secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import parse_qsl

import orjson

from aisix.admin.audit import AuditLog
from aisix.admin.crud import ResourceHandlers
from aisix.admin.docs import HTML_TYPE, docs_asset, docs_page
from aisix.admin.openapi import openapi_document
from aisix.admin.routing import (
    AdminError,
    AdminRequest,
    AdminResponse,
    ExtraRoutes,
    Route,
    RouteTable,
    presented_key,
)
from aisix.admin.ui.server import UiAssets
from aisix.asgi import (
    JSON_HEADERS,
    TEXT_HEADERS,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
    serve_lifespan,
)
from aisix.egress import EgressPolicy
from aisix.store.base import ReadOnlyStore, ResourceStore

ADMIN_BODY_LIMIT = 10 * 1024 * 1024
UNAUTHORIZED = "missing or malformed admin authorization"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

ASGIApp = Callable[[Scope, Receive, Send], Any]


class AdminApp:
    """ASGI callable serving the admin listener."""

    def __init__(
        self,
        store: ResourceStore,
        admin_keys: list[str],
        routes: RouteTable,
        extra_patterns: list[tuple[str, str]],
        draining: Callable[[], bool] | None,
        ui: UiAssets | None = None,
    ) -> None:
        self.store = store
        self._ui = ui
        self._keys = [key.encode() for key in admin_keys]
        self.routes = routes
        self._extra_patterns = extra_patterns
        self._draining = draining
        self._openapi: dict[str, bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        extra: list[tuple[bytes, bytes]] | None = None
        try:
            response = await self._handle(scope, receive)
        except AdminError as exc:
            response = AdminResponse(exc.status, {"error_msg": exc.message})
            extra = exc.headers
        except ClientGone:
            return
        if isinstance(response.body, RawBody):
            await send_response(send, response.status, response.body.data, response.body.headers)
        else:
            body = orjson.dumps(response.body)
            await send_response(send, response.status, body, JSON_HEADERS, extra)

    async def _handle(self, scope: Scope, receive: Receive) -> AdminResponse:
        method: str = scope["method"]
        path: str = scope["path"]
        if self._ui is not None and (path == "/ui" or path.startswith("/ui/")):
            page = self._ui.serve(scope)
            return AdminResponse(page.status, RawBody(page.body, page.headers))
        public = self._public(method, path)
        if public is not None:
            return public
        if not (path == "/admin/v1" or path.startswith("/admin/v1/")):
            raise AdminError(404, "resource not found")
        if not self.authorized(scope):
            raise AdminError(401, UNAUTHORIZED)
        route, params = self.routes.resolve(method, path)
        if route.writes and not self.store.writable:
            raise AdminError(405, str(ReadOnlyStore.for_location(self.store.location)))
        body = b""
        if method in _BODY_METHODS:
            try:
                body = await read_body(receive, scope, ADMIN_BODY_LIMIT)
            except BodyTooLarge:
                raise AdminError(
                    413, f"request body exceeds {ADMIN_BODY_LIMIT}-byte limit"
                ) from None
        query = dict(
            reversed(
                parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            )
        )
        request = AdminRequest(method, path, params, query, body, scope)
        return await route.handler(request)

    def authorized(self, scope: Scope) -> bool:
        """Bearer token, or `x-api-key` only when Authorization is absent; constant-time."""
        token = presented_key(scope)
        if token is None:
            return False
        matched = False
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            matched |= hmac.compare_digest(token, key)
        return matched

    def _public(self, method: str, path: str) -> AdminResponse | None:
        """Answers for the endpoints that need no admin key, else None."""
        if path == "/livez":
            self._require_get(method)
            if self._draining is not None and self._draining():
                return AdminResponse(503, RawBody(b"draining", TEXT_HEADERS))
            return AdminResponse(200, RawBody(b"ok", TEXT_HEADERS))
        if path == "/admin/openapi.json":
            self._require_get(method)
            return AdminResponse(200, RawBody(self._openapi_bytes("3.1.0"), JSON_HEADERS))
        if path in ("/admin/docs", "/admin/docs/"):
            self._require_get(method)
            return AdminResponse(200, RawBody(docs_page(), [(b"content-type", HTML_TYPE)]))
        if path == "/admin/docs/openapi.json":
            self._require_get(method)
            return AdminResponse(200, RawBody(self._openapi_bytes("3.0.3"), JSON_HEADERS))
        if path.startswith("/admin/docs/"):
            self._require_get(method)
            asset = docs_asset(path.removeprefix("/admin/docs/"))
            if asset is None:
                raise AdminError(404, "resource not found")
            content_type, data = asset
            return AdminResponse(200, RawBody(data, [(b"content-type", content_type)]))
        return None

    @staticmethod
    def _require_get(method: str) -> None:
        if method not in ("GET", "HEAD"):
            raise AdminError(405, "method not allowed", ("GET", "HEAD"))

    def _openapi_bytes(self, openapi_version: str) -> bytes:
        cached = self._openapi.get(openapi_version)
        if cached is None:
            document = openapi_document(self._extra_patterns, _package_version())
            document["openapi"] = openapi_version
            cached = self._openapi[openapi_version] = orjson.dumps(document)
        return cached


class RawBody:
    """A response body sent as-is (not JSON-encoded), with its own headers."""

    __slots__ = ("data", "headers")

    def __init__(self, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.data = data
        self.headers = headers


def _package_version() -> str:
    try:
        return version("aisix")
    except PackageNotFoundError:
        return "0.0.0"


def build_admin_app(
    store: ResourceStore,
    admin_keys: list[str],
    *,
    on_write: Callable[[], None] | None = None,
    extra_routes: ExtraRoutes | None = None,
    draining: Callable[[], bool] | None = None,
    audit: AuditLog | None = None,
    ui: UiAssets | None = None,
    egress: EgressPolicy | None = None,
) -> ASGIApp:
    """The admin ASGI app over `store`.

    `on_write` is called after every committed write (the supervisor reloads on it).
    `extra_routes` maps `(method, pattern)` to an async handler, e.g.
    `{("GET", "/admin/v1/apikeys/{id}/usage"): usage_handler}`; see `aisix.admin.routing`.
    `draining()` returning True makes `/livez` answer 503 `draining`.
    `audit` records every committed write and serves `GET /admin/v1/audit`; `ui` serves the
    dashboard at `/ui` (its files need no key; its API calls do). `egress` is checked on every
    provider key write (default: metadata networks denied).
    """
    routes = dict(extra_routes or {})
    if audit is not None:
        routes[("GET", "/admin/v1/audit")] = audit.read
    extra = [Route(method, pattern, fn) for (method, pattern), fn in routes.items()]
    table = RouteTable(extra + ResourceHandlers(store, on_write, audit, egress).routes())
    patterns = [(r.method, r.pattern) for r in extra]
    return AdminApp(store, admin_keys, table, patterns, draining, ui)
