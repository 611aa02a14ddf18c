"""What an upstream target is to the pipeline: a provider that builds, authorizes and decodes.

A provider is built once per snapshot from a provider key and a single-target model (URLs
normalised, static headers joined, TLS settings resolved). Per attempt the pipeline hands it an
`UpstreamCall` — the client's body for a same-family relay, or a canonical request to
translate — and gets back an `UpstreamRequest`, which `authorize` completes with the
credential (a static header, a minted token, or a signature) just before it is sent. The
transport (`aisix.providers.transport`) does the I/O; the family codec (`codec`) reads the
answer. Provider secrets live only inside the provider object and the request it authorizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aisix.wire.base import Endpoint, UpstreamCodec
from aisix.wire.types import ChatRequest, EmbeddingRequest

__all__ = ["Endpoint", "Provider", "TLSConfig", "UpstreamCall", "UpstreamRequest"]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Trust for one upstream; hashable, so the transport caches one SSLContext per value."""

    verify: bool = True
    #: PEM of extra trusted CAs (provider key `tls.ca_cert`); None: the system store
    ca_cert: str | None = None
    #: client certificate and key files (bootstrap `upstream.tls`) for mutual TLS
    client_cert_file: str | None = None
    client_key_file: str | None = None
    #: a CA bundle file (bootstrap `upstream.tls.ca_file`)
    ca_file: str | None = None


@dataclass(slots=True)
class UpstreamRequest:
    """One HTTP request to an upstream; `headers` are final once `authorize` has run."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""
    tls: TLSConfig = field(default_factory=TLSConfig)
    #: egress proxy URL (`http://host:port`) or None for a direct connection
    proxy: str | None = None


@dataclass(slots=True)
class UpstreamCall:
    """What the pipeline asks of a provider for one attempt."""

    endpoint: Endpoint
    stream: bool
    request_id: str
    #: same-family relay: the client's checked body (the provider rewrites `model`)
    body: dict[str, Any] | None = None
    #: translated attempt: the canonical request to encode with the provider's codec
    canonical: ChatRequest | None = None
    #: translated embeddings call (families with an `EmbeddingCodec`)
    embedding: EmbeddingRequest | None = None
    #: client headers the family forwards (`anthropic-beta`, `anthropic-version`), lowercased
    client_headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """One single-target model's upstream."""

    adapter: str
    #: the wire family of its API: same-family inbound calls are relayed as bytes
    family: str
    model_name: str
    codec: UpstreamCodec

    def supports(self, endpoint: Endpoint) -> bool:
        """Whether this target can serve `endpoint` at all (natively or translated)."""
        ...

    def native(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint` is this family's own API, served by relaying the client's body."""
        ...

    def build(self, call: UpstreamCall) -> UpstreamRequest: ...

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        """Add the credential; may await a token refresh (single-flight, cached)."""
        ...


# --- the pre-codec interface, still used by the pipeline until it moves to `Provider` -------
import ssl  # noqa: E402
from typing import Literal  # noqa: E402

from aisix.wire.types import Usage  # noqa: E402

LegacyEndpoint = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class UpstreamTarget(Protocol):
    adapter: str
    model_name: str
    ssl: ssl.SSLContext | bool

    def supports(self, endpoint: Endpoint) -> bool: ...

    def prepare(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool, request_id: str
    ) -> PreparedRequest: ...


def usage_from_openai(data: Any) -> Usage | None:
    """Read an OpenAI `usage` object; None when absent or malformed."""
    if not isinstance(data, dict):
        return None
    if not isinstance(data.get("prompt_tokens"), int):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage.of(
        data.get("prompt_tokens"),
        data.get("completion_tokens", 0),
        cached,
        data.get("total_tokens"),
    )
