"""The Gemini wire family (Google AI Studio and Vertex AI): codec, decoders, embeddings.

`CODEC` (Gemini API) and `VERTEX_CODEC` (Vertex AI: same chat wire, `:predict` embeddings for
non-Gemini embedding models) implement `UpstreamCodec` and `EmbeddingCodec` for family
"gemini" (contract §7.3). Requests are encoded in `aisix.wire.gemini.encode`, answers and
`streamGenerateContent?alt=sse` chunks decoded in `aisix.wire.gemini.decode`. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aisix.wire.base import EmbeddingFamilyCodec
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
from aisix.wire.types import EmbeddingRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class GeminiCodec(EmbeddingFamilyCodec):
    """The Gemini family as an `UpstreamCodec` and `EmbeddingCodec`; `vertex`: Vertex AI,
    where embeddings of non-Gemini models go through `:predict`."""

    vertex: bool = False

    def embedding_method(self, model_name: str, count: int) -> str:
        """`embedContent`, `batchEmbedContents` or (Vertex) `predict`."""
        return embedding_method(model_name, count, self.vertex)


def _codec(vertex: bool) -> GeminiCodec:
    def encode(request: EmbeddingRequest, model_name: str) -> dict[str, Any]:
        method = embedding_method(model_name, len(request.inputs), vertex)
        return encode_embeddings(request, model_name, method)

    return GeminiCodec(
        family=FAMILY,
        encode_request=encode_request,
        decode_response=decode_response,
        stream_decoder=StreamDecoder,
        parse_error=parse_error,
        read_usage=usage_of,
        usage_field="usageMetadata",
        encode_embeddings=encode,
        decode_embeddings=decode_embeddings,
        vertex=vertex,
    )


CODEC = _codec(vertex=False)
VERTEX_CODEC = _codec(vertex=True)

__all__ = [
    "CODEC",
    "FAMILY",
    "VERTEX_CODEC",
    "GeminiCodec",
    "StreamDecoder",
    "decode_embeddings",
    "decode_response",
    "encode_embeddings",
    "encode_request",
    "parse_error",
    "retry_delay",
    "usage_of",
]
