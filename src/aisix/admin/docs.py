"""The interactive admin API docs: Swagger UI served offline from `swagger_ui_bundle`.

`GET /admin/docs` is a small page (docs.html) that loads the bundle's static assets from
`/admin/docs/<file>` and the API description from `/admin/docs/openapi.json`. The bundled
Swagger UI (4.x) renders only OpenAPI 3.0 documents, so that copy carries `openapi: 3.0.3`;
`/admin/openapi.json` stays the authoritative 3.1 document. Only files that exist in the
bundle directory are served, each with its content type; assets are read once and cached.
"""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

_CONTENT_TYPES = {
    ".js": b"application/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".html": b"text/html; charset=utf-8",
    ".map": b"application/json",
}
HTML_TYPE = _CONTENT_TYPES[".html"]


@cache
def docs_page() -> bytes:
    return resources.files("aisix.admin").joinpath("docs.html").read_bytes()


@cache
def _bundle_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(swagger_ui_path)


@lru_cache(maxsize=32)  # bounded: names come from unauthenticated requests
def docs_asset(name: str) -> tuple[bytes, bytes] | None:
    """(content type, bytes) of one Swagger UI asset, or None when there is no such asset."""
    content_type = _CONTENT_TYPES.get(Path(name).suffix)
    if content_type is None or "/" in name or name.startswith("."):
        return None
    path = _bundle_dir() / name
    if not path.is_file():
        return None
    return content_type, path.read_bytes()
