"""The `gemini` adapter: Google AI Studio's Gemini API (contract §7.2, §7.3).

Built once per snapshot: `api_base` normalised (default
`https://generativelanguage.googleapis.com`, a pasted `/v1beta` stripped), the model's URLs
(`:generateContent`, `:streamGenerateContent?alt=sse`, `:embedContent`,
`:batchEmbedContents`) and static headers joined. Chat and Anthropic-inbound calls are
translated through the canonical structs with the Gemini codec; embeddings through its
`EmbeddingCodec` side. `authorize` adds `x-goog-api-key`. `GoogleModelURLs` and
`encode_call` are shared with the `vertex` adapter, which differs only in URLs and credentials.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from aisix.credentials import gemini as credentials
from aisix.errors import UpstreamAuthError
from aisix.providers.base import Endpoint, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.providers.openai import static_headers
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.base import UpstreamCodec
from aisix.wire.gemini import CODEC, GeminiCodec

DEFAULT_BASE = "https://generativelanguage.googleapis.com"
#: what a Gemini-family target serves: chat, Messages and Responses translated, embeddings by
#: its own API (no Gemini inbound exists, so nothing is native)
ENDPOINTS: frozenset[str] = frozenset({"chat", "messages", "responses", "embeddings"})


def normalise_base(api_base: str | None) -> str:
    if not api_base or not api_base.strip():
        return DEFAULT_BASE
    base = api_base.strip().rstrip("/")
    if base.endswith("/v1beta"):
        base = base[: -len("/v1beta")].rstrip("/")
    return base


def model_path(model_name: str) -> str:
    """The model id as a URL segment (a pasted `models/` prefix dropped)."""
    name = model_name.strip()
    if name.startswith("models/"):
        name = name[len("models/") :]
    return quote(name, safe="-._~@")


class GoogleModelURLs:
    """The method URLs under one model's resource URL (`…/models/{model}`)."""

    __slots__ = ("root", "stream", "unary")

    def __init__(self, root: str) -> None:
        self.root = root
        self.unary = root + ":generateContent"
        self.stream = root + ":streamGenerateContent?alt=sse"

    def method(self, name: str) -> str:
        return f"{self.root}:{name}"


def encode_call(
    call: UpstreamCall, codec: GeminiCodec, model_name: str, urls: GoogleModelURLs
) -> tuple[str, bytes]:
    """(URL, body) of one translated chat or embeddings attempt."""
    if call.embedding is not None:
        method = codec.embedding_method(model_name, len(call.embedding.inputs))
        body = codec.encode_embeddings(call.embedding, model_name)
        return urls.method(method), orjson.dumps(body)
    if call.canonical is None:  # no Gemini inbound API exists: every call is translated
        raise TypeError("a gemini-family call needs a canonical request")
    body = codec.encode_request(call.canonical, model_name)
    return (urls.stream if call.stream else urls.unary), orjson.dumps(body)


def request_headers(
    base: dict[str, str], extra: dict[str, str], call: UpstreamCall
) -> dict[str, str]:
    headers = dict(base)
    headers["x-aisix-request-id"] = call.request_id
    if call.stream:
        headers["Accept"] = "text/event-stream"
    if extra:
        headers.update(extra)
    return headers


class GeminiProvider:
    adapter = "gemini"
    family = "gemini"
    codec: UpstreamCodec = CODEC
    __slots__ = ("_extra_headers", "_fault", "_key", "base", "headers", "model_name", "tls", "urls")

    def __init__(self, key: ProviderKey, model: DirectModel, tls: TLSConfig) -> None:
        self.base = normalise_base(key.api_base)
        self.model_name = model.model_name
        self.tls = tls
        self.urls = GoogleModelURLs(f"{self.base}/v1beta/models/{model_path(model.model_name)}")
        self.headers, self._extra_headers = static_headers(key)
        self._key = ""
        #: why the secret is unusable (checked on admin writes; a stored one is reported here)
        self._fault: str | None = None
        try:
            self._key = credentials.parse(key.secret).api_key
        except ValueError as err:
            self._fault = str(err)

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in ENDPOINTS

    def native(self, endpoint: Endpoint) -> bool:
        return False

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        url, body = encode_call(call, CODEC, self.model_name, self.urls)
        headers = request_headers(self.headers, self._extra_headers, call)
        return UpstreamRequest("POST", url, headers, body, self.tls)

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        if self._fault is not None:
            raise UpstreamAuthError(f"the provider key's secret is unusable: {self._fault}")
        request.headers["x-goog-api-key"] = self._key
        return request


def build_provider(key: ProviderKey, model: DirectModel, tls: TLSConfig) -> GeminiProvider:
    return GeminiProvider(key, model, tls)


__all__ = [
    "DEFAULT_BASE",
    "ENDPOINTS",
    "GeminiProvider",
    "GoogleModelURLs",
    "build_provider",
    "encode_call",
    "model_path",
    "normalise_base",
    "request_headers",
]
