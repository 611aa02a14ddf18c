"""The `anthropic` adapter: Anthropic's Messages API (contract §6.9, §7.2).

Built once per snapshot from a provider key and a single-target model: `api_base` normalised
(default `https://api.anthropic.com`; a pasted `/v1/messages` or `/v1` stripped), the secret
parsed, static headers joined. `/v1/messages` and `/v1/messages/count_tokens` are native (the
client's body relayed with `model` := `model_name`, its `anthropic-version` and
`anthropic-beta` forwarded); chat and the Responses API are translated through the family
codec. `authorize` adds `x-api-key` just before sending, so the secret lives only in this
object and that request.
"""

from __future__ import annotations

from typing import Any

import orjson

from aisix import __version__
from aisix.credentials.anthropic import parse as parse_secret
from aisix.errors import InvalidRequest, NotImplementedByAdapter
from aisix.providers.base import Endpoint, Provider, TLSConfig, UpstreamCall, UpstreamRequest
from aisix.resources import DirectModel, ProviderKey
from aisix.wire.anthropic import CODEC
from aisix.wire.anthropic.common import DEFAULT_VERSION, FAMILY
from aisix.wire.base import UpstreamCodec

DEFAULT_BASE = "https://api.anthropic.com"
USER_AGENT = f"aisix/{__version__}"
_PATHS: dict[str, str] = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
_NATIVE = frozenset(_PATHS)
#: served by translating the canonical request (chat, and the Responses API through it)
_TRANSLATED = frozenset({"chat", "responses"})
_SUPPORTED = _NATIVE | _TRANSLATED


def normalise_base(api_base: str | None) -> str:
    """§7.2: trim whitespace and trailing `/`, then strip a trailing `/v1/messages` or `/v1`."""
    base = (api_base or "").strip().rstrip("/")
    if not base:
        return DEFAULT_BASE
    for suffix in ("/v1/messages", "/v1"):
        if base.endswith(suffix):
            return base[: -len(suffix)].rstrip("/") or DEFAULT_BASE
    return base


class AnthropicProvider:
    """One single-target model on an Anthropic upstream (the `Provider` protocol)."""

    adapter = "anthropic"
    family = FAMILY
    codec: UpstreamCodec = CODEC
    __slots__ = ("_api_key", "_extra_headers", "_headers", "base", "model_name", "tls", "urls")

    def __init__(self, key: ProviderKey, model: DirectModel, tls: TLSConfig) -> None:
        self.base = normalise_base(key.api_base)
        self.model_name = model.model_name
        self.tls = tls
        self.urls = {name: self.base + path for name, path in _PATHS.items()}
        self._api_key = parse_secret(key.secret).api_key
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # no compressed answers: streams must flow event by event, and JSON is small
            "Accept-Encoding": "identity",
        }
        request = key.request
        self._extra_headers = dict(request.default_headers or {}) if request else {}

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in _SUPPORTED

    def native(self, endpoint: Endpoint) -> bool:
        return endpoint in _NATIVE

    def build(self, call: UpstreamCall) -> UpstreamRequest:
        headers = dict(self._headers)
        headers["x-aisix-request-id"] = call.request_id
        client = call.client_headers
        body: dict[str, Any]
        if call.endpoint in _NATIVE:
            if call.body is None:
                raise InvalidRequest(f"request payload is invalid: no body for {call.endpoint}")
            body = dict(call.body)
            body["model"] = self.model_name
            headers["anthropic-version"] = client.get("anthropic-version") or DEFAULT_VERSION
            beta = client.get("anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
            url = self.urls[call.endpoint]
        elif call.endpoint in _TRANSLATED and call.canonical is not None:
            body = CODEC.encode_request(call.canonical, self.model_name)
            headers["anthropic-version"] = DEFAULT_VERSION
            url = self.urls["messages"]
        else:
            raise NotImplementedByAdapter(
                f"{call.endpoint} is not supported by the anthropic adapter"
            )
        if call.stream and call.endpoint != "count_tokens":
            headers["Accept"] = "text/event-stream"
        if self._extra_headers:
            headers.update(self._extra_headers)
        return UpstreamRequest("POST", url, headers, orjson.dumps(body), self.tls)

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        request.headers["x-api-key"] = self._api_key
        return request

    def __repr__(self) -> str:
        return f"AnthropicProvider(base={self.base!r}, model_name={self.model_name!r})"


def build_provider(key: ProviderKey, model: DirectModel, tls: TLSConfig) -> Provider:
    """The provider for one single-target model on an `anthropic` provider key; a secret
    that cannot be an API key is a `ValueError` (without the secret)."""
    return AnthropicProvider(key, model, tls)
