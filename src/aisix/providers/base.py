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

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aisix.wire.base import Endpoint, UpstreamCodec
from aisix.wire.types import ChatRequest, EmbeddingRequest

__all__ = [
    "Endpoint",
    "Provider",
    "StreamedBody",
    "TLSConfig",
    "UpstreamCall",
    "UpstreamRequest",
]


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
class StreamedBody:
    """A request body sent upstream as it arrives from the client (passthrough uploads).

    `chunks` yields it (it may raise the client's disconnect or a size limit); `length` is the
    client's Content-Length, None to send it chunked. A provider that signs the payload reads
    it whole in `authorize` (`read_whole`)."""

    chunks: AsyncGenerator[bytes, None]
    length: int | None = None

    async def read_whole(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])


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
    #: a body streamed as it arrives instead of `body` (sent once: never retried)
    stream_body: StreamedBody | None = None

    async def buffer_body(self) -> None:
        """Read a streamed body whole into `body` (to sign it, or to hand it to a mock)."""
        if self.stream_body is not None:
            self.body = await self.stream_body.read_whole()
            self.stream_body = None


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
