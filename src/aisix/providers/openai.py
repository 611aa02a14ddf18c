"""The `openai` adapter: OpenAI and every OpenAI-compatible server (contract §7.1, §7.2).

Builds the target once per snapshot: `api_base` normalised (one pasted endpoint suffix
stripped, bare `api.openai.com` gains `/v1`), credential and literal default headers merged.
Per request it only rewrites the body: `model` := `model_name`, parameter renames, default
body fields where absent, and `stream_options.include_usage` forced on streams.
"""

from __future__ import annotations

import ssl
from typing import Any

import orjson

from aisix import __version__
from aisix.providers.base import Endpoint, PreparedRequest
from aisix.resources import DirectModel, ProviderKey

DEFAULT_BASE = "https://api.openai.com/v1"
_SUFFIXES = ("/chat/completions", "/completions", "/embeddings")
_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
USER_AGENT = f"aisix/{__version__}"


def normalise_base(api_base: str | None) -> str:
    if not api_base:
        return DEFAULT_BASE
    base = api_base.strip().rstrip("/")
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)].rstrip("/")
            break
    if base in ("https://api.openai.com", "http://api.openai.com"):
        base += "/v1"
    return base


def ssl_context(key: ProviderKey) -> ssl.SSLContext | bool:
    """The TLS setting for this provider key: True = system trust, False = no checks."""
    if key.tls is None:
        return True
    if not key.tls.verify:
        return False
    if key.tls.ca_cert:
        return ssl.create_default_context(cadata=key.tls.ca_cert)
    return True


class OpenAITarget:
    adapter = "openai"
    __slots__ = (
        "_defaults",
        "_extra_headers",
        "_renames",
        "base",
        "headers",
        "model_name",
        "ssl",
        "urls",
    )

    def __init__(self, key: ProviderKey, model: DirectModel) -> None:
        self.base = normalise_base(key.api_base)
        self.model_name = model.model_name
        self.ssl = ssl_context(key)
        self.urls = {name: self.base + path for name, path in _PATHS.items()}
        self.headers = {
            "Authorization": f"Bearer {key.secret}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # no compressed answers: streams must flow chunk by chunk, and JSON is small
            "Accept-Encoding": "identity",
        }
        request = key.request
        self._extra_headers = dict(request.default_headers or {}) if request else {}
        self._renames = dict(request.param_renames or {}) if request else {}
        self._defaults = dict(request.default_body_fields or {}) if request else {}

    def supports(self, endpoint: Endpoint) -> bool:
        return True

    def prepare(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool, request_id: str
    ) -> PreparedRequest:
        out = dict(body)
        out["model"] = self.model_name
        for old, new in self._renames.items():
            if old in out:
                out[new] = out.pop(old)
        for name, value in self._defaults.items():
            out.setdefault(name, value)
        headers = dict(self.headers)
        headers["x-aisix-request-id"] = request_id
        if stream:
            options = out.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            out["stream_options"] = options
            headers["Accept"] = "text/event-stream"
        if self._extra_headers:
            headers.update(self._extra_headers)
        return PreparedRequest(self.urls[endpoint], headers, orjson.dumps(out))
