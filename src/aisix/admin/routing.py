"""The admin listener's request/response types and its small route table.

A route is a method plus a path pattern of literal segments and `{name}` placeholders
(`/admin/v1/apikeys/{id}/usage`); a placeholder matches exactly one non-empty segment. Other
modules (model status, health, usage reads) plug their handlers in through `extra_routes`,
a mapping `(method, pattern) -> handler`; a handler takes an `AdminRequest` and returns an
`AdminResponse` or raises `AdminError`. A path belongs to its most specific pattern (most
literal segments: `/models/status` before `/models/{id}`); a method that pattern does not
serve is a 405 whose `Allow` names the ones it does. Every route under `/admin/v1/` is
authenticated before its handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aisix.asgi import Scope, header


class AdminError(Exception):
    """An admin error answered as `{"error_msg": message}` with `status`."""

    def __init__(self, status: int, message: str, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: the methods a 405 names in its `Allow` header
        self.allow = allow

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allow).encode())] if self.allow else []


@dataclass(frozen=True, slots=True)
class AdminRequest:
    method: str
    path: str
    #: values of the pattern's `{name}` placeholders
    path_params: dict[str, str]
    #: query parameters; the first value of a repeated name wins
    query: dict[str, str]
    #: the request body (read only for POST and PUT, within the admin body limit)
    body: bytes
    scope: Scope = field(repr=False)


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    #: any value orjson can serialise
    body: Any


def presented_key(scope: Scope) -> bytes | None:
    """The admin key a request presents: a Bearer token, or `x-api-key` only when
    Authorization is absent; None when malformed or empty."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
    else:
        token = (header(scope, b"x-api-key") or b"").strip()
    return token or None


_DIGITS = re.compile(r"[0-9]{1,10}")


def page_param(query: dict[str, str], name: str, low: int, high: int | None) -> int | None:
    """An integer query parameter within [low, high], None when absent; 400 otherwise."""
    raw = query.get(name)
    if raw is None:
        return None
    bound = f"between {low} and {high}" if high is not None else f">= {low}"
    # ASCII digits only ("²".isdigit() is True), and at most 10 (no 20-digit offsets)
    if not _DIGITS.fullmatch(raw) or int(raw) < low or (high is not None and int(raw) > high):
        raise AdminError(400, f"{name} must be an integer {bound}")
    return int(raw)


Handler = Callable[[AdminRequest], Awaitable[AdminResponse]]
ExtraRoutes = Mapping[tuple[str, str], Handler]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    #: a resource write: refused with 405 on a read-only (file-managed) store
    writes: bool = False
    segments: tuple[str, ...] = field(init=False)
    #: how specific the pattern is: a path matched by several patterns belongs to the one
    #: with the most literal segments (`/models/status` is not `/models/{id}`)
    literal_segments: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.pattern.strip("/").split("/")))
        literal = sum(1 for s in self.segments if not s.startswith("{"))
        object.__setattr__(self, "literal_segments", literal)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


class RouteTable:
    """Routes in priority order; answers the route for a request, or 404 / 405."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route of the most specific pattern matching `path`; 405 (with the methods
        that pattern serves) when it does not serve `method`, 404 when nothing matches."""
        parts = path.strip("/").split("/") if path != "/" else [""]
        matches = [(r, p) for r in self.routes if (p := r.match(parts)) is not None]
        if not matches:
            raise AdminError(404, "resource not found")
        best = max(route.literal_segments for route, _ in matches)
        allowed: list[str] = []
        for route, params in matches:
            if route.literal_segments != best:
                continue
            if route.method == method:
                return route, params
            if route.method not in allowed:
                allowed.append(route.method)
        raise AdminError(405, "method not allowed", tuple(allowed))

    def patterns(self) -> list[tuple[str, str]]:
        return [(route.method, route.pattern) for route in self.routes]
