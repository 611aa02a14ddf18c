"""The `openai` adapter: OpenAI and every OpenAI-compatible server (contract §7.1, §7.2).

Built once per snapshot: `api_base` normalised (one pasted endpoint suffix stripped, bare
`api.openai.com` gains `/v1`), static and literal default headers joined. Per attempt it only
shapes the body: the client's own body (same family) or the canonical request encoded by the
OpenAI codec, then `model` := `model_name`, parameter renames, default body fields where
absent, and `stream_options.include_usage` forced on streams. `authorize` adds the bearer key.
"""

from __future__ import annotations

import orjson

from aisix import __version__
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.base import UpstreamCodec
from aisix.wire.openai import CODEC
from aisix.wire.openai_media import (
    MEDIA_ENDPOINTS,
    MEDIA_PATHS,
    media_body,
    upload_content_type,
)

DEFAULT_BASE = "https://api.openai.com/v1"
_SUFFIXES = ("/chat/completions", "/completions", "/embeddings")
_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
    **MEDIA_PATHS,
}
#: endpoints every OpenAI-compatible server takes in its own wire format (media APIs too:
#: a server without one answers its own 404)
_NATIVE = frozenset({"chat", "completions", "embeddings"}) | MEDIA_ENDPOINTS
#: endpoints whose stream is the family's SSE (the others' answers come whole or binary)
_SSE = frozenset({"chat", "completions", "responses"})
#: endpoints served by translating to chat
_TRANSLATED = frozenset({"messages", "responses"})
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


class OpenAIBody:
    """The OpenAI-family body rules a provider key configures (also used by azure-openai)."""

    __slots__ = ("_defaults", "_renames", "model_name")

    def __init__(self, key: ProviderKey, model_name: str) -> None:
        request = key.request
        self.model_name = model_name
        self._renames = dict(request.param_renames or {}) if request else {}
        self._defaults = dict(request.default_body_fields or {}) if request else {}

    def shape(self, call: UpstreamCall, codec: UpstreamCodec, endpoint: str) -> bytes:
        """The body for `endpoint` (the upstream API called, which may differ from the
        client's when translating)."""
        if call.body is not None and endpoint in MEDIA_ENDPOINTS:
            upload = media_body(call.body, self.model_name)
            if upload is not None:
                return upload[0]
        if call.body is not None:
            out = dict(call.body)
        else:
            assert call.canonical is not None
            out = codec.encode_request(call.canonical, self.model_name)
        out["model"] = self.model_name
        for old, new in self._renames.items():
            if old in out:
                out[new] = out.pop(old)
        for name, value in self._defaults.items():
            out.setdefault(name, value)
        if call.stream and endpoint in _SSE and endpoint != "responses":
            options = out.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            out["stream_options"] = options
        return orjson.dumps(out)

    @staticmethod
    def headers_for(call: UpstreamCall, headers: dict[str, str]) -> None:
        """Accept and Content-Type of `call` (SSE streams; multipart uploads)."""
        if call.endpoint not in MEDIA_ENDPOINTS:
            if call.stream:
                headers["Accept"] = "text/event-stream"
        elif call.body is not None:
            content_type = upload_content_type(call.body)
            if content_type is not None:
                headers["Content-Type"] = content_type


def static_headers(key: ProviderKey) -> tuple[dict[str, str], dict[str, str]]:
    """(headers every request carries, the key's literal default headers)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # no compressed answers: streams must flow chunk by chunk, and JSON is small
        "Accept-Encoding": "identity",
    }
    request = key.request
    return headers, dict(request.default_headers or {}) if request else {}


def call_headers(
    static: dict[str, str], extra: dict[str, str], call: UpstreamCall
) -> dict[str, str]:
    """One attempt's headers for the OpenAI family: static ones, the request id, `Accept` for
    streams / `Content-Type` for uploads, then the key's literal default headers (they win,
    contract §7.1)."""
    headers = dict(static)
    headers["x-aisix-request-id"] = call.request_id
    OpenAIBody.headers_for(call, headers)
    if extra:
        headers.update(extra)
    return headers


class OpenAIProvider:
    adapter = "openai"
    family = "openai"
    codec: UpstreamCodec = CODEC
    __slots__ = (
        "_auth",
        "_body",
        "_extra_headers",
        "_native",
        "base",
        "headers",
        "model_name",
        "tls",
        "urls",
    )

    def __init__(self, key: ProviderKey, model: DirectModel, tls: TLSConfig) -> None:
        self.base = normalise_base(key.api_base)
        self.model_name = model.model_name
        self.tls = tls
        self.urls = {name: self.base + path for name, path in _PATHS.items()}
        self.headers, self._extra_headers = static_headers(key)
        self._auth = f"Bearer {key.secret}"
        self._body = OpenAIBody(key, model.model_name)
        responses = key.capabilities.responses if key.capabilities else None
        if responses is None:  # on by default for OpenAI's own API only
            responses = self.base == DEFAULT_BASE
        self._native = _NATIVE | {"responses"} if responses else _NATIVE

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in _NATIVE or endpoint in _TRANSLATED

    def native(self, endpoint: Endpoint) -> bool:
        return endpoint in self._native

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        endpoint = call.endpoint if call.body is not None else "chat"
        headers = call_headers(self.headers, self._extra_headers, call)
        body = self._body.shape(call, self.codec, endpoint)
        return UpstreamRequest("POST", self.urls[endpoint], headers, body, self.tls)

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        request.headers["Authorization"] = self._auth
        return request


def build_provider(key: ProviderKey, model: DirectModel, tls: TLSConfig) -> OpenAIProvider:
    return OpenAIProvider(key, model, tls)


__all__ = ["DEFAULT_BASE", "OpenAIProvider", "build_provider", "normalise_base"]
