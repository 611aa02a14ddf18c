"""Serves the dashboard's static files at `/ui/` with their security and cache headers.

`UiAssets.serve(scope)` maps `/ui` (redirect), `/ui/` (index.html) and `/ui/<file>` to a
`UiResponse`. Only files under `static/` are served (no `..`, no dotfiles),
each with its content type, `X-Content-Type-Options: nosniff` and a strict
Content-Security-Policy (scripts and styles from this origin only, nothing inline, no framing).
Versioned vendor files are cached as immutable; the app's own files revalidate by ETag.
Files are read once and kept in memory: the whole tree is a few hundred KiB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from aisix.asgi import Scope, header

CONTENT_TYPES: dict[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}
IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
_PROXY_PORT_MARK = b"{{proxy_port}}"
_PROXY_URL_MARK = b"{{proxy_url}}"


@dataclass(frozen=True, slots=True)
class UiResponse:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: bytes
    etag: bytes
    immutable: bool


def content_security_policy(proxy_sources: str) -> bytes:
    """The page's CSP; `proxy_sources` are the origins the Playground may call."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src 'self' {proxy_sources}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ).encode()


class UiAssets:
    """The dashboard's files and the headers they are served with.

    `proxy_port` is the proxy listener's port: by default the Playground calls the proxy on
    the page's own host at that port. `proxy_url` (the proxy as browsers reach it, e.g. behind
    a reverse proxy) replaces that default.
    """

    def __init__(self, proxy_port: int, proxy_url: str | None = None) -> None:
        if proxy_url:
            parts = urlsplit(proxy_url)
            sources = f"{parts.scheme}://{parts.netloc}"
        else:
            sources = f"http://*:{proxy_port} https://*:{proxy_port}"
        self._security: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", content_security_policy(sources)),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        index = _load("index.html")
        assert index is not None, "aisix.admin.ui: static/index.html is missing"
        body = index.body.replace(_PROXY_PORT_MARK, str(proxy_port).encode())
        body = body.replace(_PROXY_URL_MARK, _attribute(proxy_url or ""))
        self._index = _asset(body, index.content_type, immutable=False)

    def serve(self, scope: Scope) -> UiResponse:
        """The answer to one `/ui` request (an ASGI http scope)."""
        return self.respond(scope["method"], scope["path"], header(scope, b"if-none-match"))

    def respond(self, method: str, path: str, if_none_match: bytes | None) -> UiResponse:
        if method not in ("GET", "HEAD"):
            return self._error(405, b'{"error_msg":"method not allowed"}')
        if path == "/ui":
            return UiResponse(308, b"", [(b"location", b"/ui/"), *self._security])
        name = path.removeprefix("/ui/")
        asset = self._index if name in ("", "index.html") else _load(name)
        if asset is None:
            return self._error(404, b'{"error_msg":"resource not found"}')
        cache_control = IMMUTABLE if asset.immutable else REVALIDATE
        headers = [
            (b"cache-control", cache_control),
            (b"etag", asset.etag),
            *self._security,
        ]
        if if_none_match is not None and asset.etag in _etags(if_none_match):
            return UiResponse(304, b"", headers)
        body = b"" if method == "HEAD" else asset.body
        return UiResponse(200, body, [(b"content-type", asset.content_type), *headers])

    def _error(self, status: int, body: bytes) -> UiResponse:
        headers = [(b"content-type", b"application/json"), *self._security]
        return UiResponse(status, body, headers)


def _etags(header_value: bytes) -> list[bytes]:
    return [tag.strip().removeprefix(b"W/") for tag in header_value.split(b",")]


def _attribute(text: str) -> bytes:
    """`text` escaped for a double-quoted HTML attribute."""
    escaped = text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return escaped.replace(">", "&gt;").encode()


def _asset(body: bytes, content_type: bytes, *, immutable: bool) -> _Asset:
    etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
    return _Asset(body, content_type, etag, immutable)


def _load(name: str) -> _Asset | None:
    """One file under `static/`, or None (a dict lookup: unknown names cache nothing)."""
    return _all_assets().get(name)


@cache
def _all_assets() -> dict[str, _Asset]:
    """Every servable file under `static/`, keyed by its path relative to it."""
    root = resources.files("aisix.admin.ui").joinpath("static")
    found: dict[str, _Asset] = {}
    stack = [(root, PurePosixPath())]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            if entry.name.startswith("."):
                continue
            rel = prefix / entry.name
            if entry.is_dir():
                stack.append((entry, rel))
                continue
            content_type = CONTENT_TYPES.get(PurePosixPath(entry.name).suffix)
            if content_type is None:
                continue
            immutable = rel.parts[0] == "vendor"
            found[str(rel)] = _asset(entry.read_bytes(), content_type, immutable=immutable)
    return found
