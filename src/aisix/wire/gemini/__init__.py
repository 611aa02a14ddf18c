"""The Gemini wire family (Google AI Studio and Vertex AI): codec, decoders, embeddings.

`CODEC` (Gemini API) and `VERTEX_CODEC` (Vertex AI: same chat wire, `:predict` embeddings for
non-Gemini embedding models) implement `UpstreamCodec` and `EmbeddingCodec` for family
"gemini" (contract §7.3). Requests are encoded in `aisix.wire.gemini.encode`, answers and
`streamGenerateContent?alt=sse` chunks decoded in `aisix.wire.gemini.decode`. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from aisix.wire.gemini.decode import (
    StreamDecoder,
    decode_embeddings,
    decode_response,
    parse_error,
    retry_delay,
    usage_of,
)
from aisix.wire.gemini.encode import (
    FAMILY,
    embedding_method,
    encode_embeddings,
    encode_request,
)
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    UpstreamFault,
    Usage,
)


class Codec:
    """The Gemini family as an `UpstreamCodec` and `EmbeddingCodec`."""

    family = FAMILY
    __slots__ = ("vertex",)

    def __init__(self, vertex: bool = False) -> None:
        #: Vertex AI: embeddings of non-Gemini models go through `:predict`
        self.vertex = vertex

    def encode_request(self, request: ChatRequest, model_name: str) -> dict[str, Any]:
        return encode_request(request, model_name)

    def decode_response(self, body: dict[str, Any]) -> ChatResponse:
        return decode_response(body)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def parse_error(self, body: bytes) -> UpstreamFault:
        return parse_error(body)

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        return usage_of(body.get("usageMetadata"))

    def embedding_method(self, model_name: str, count: int) -> str:
        """`embedContent`, `batchEmbedContents` or (Vertex) `predict`."""
        return embedding_method(model_name, count, self.vertex)

    def encode_embeddings(self, request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        method = embedding_method(model_name, len(request.inputs), self.vertex)
        return encode_embeddings(request, model_name, method)

    def decode_embeddings(self, body: dict[str, Any]) -> EmbeddingResponse:
        return decode_embeddings(body)


CODEC = Codec()
VERTEX_CODEC = Codec(vertex=True)

__all__ = [
    "CODEC",
    "FAMILY",
    "VERTEX_CODEC",
    "Codec",
    "StreamDecoder",
    "decode_embeddings",
    "decode_response",
    "encode_embeddings",
    "encode_request",
    "parse_error",
    "retry_delay",
    "usage_of",
]
