"""The codec protocols: what a wire family offers upstream, and what an inbound protocol offers.

`UpstreamCodec` (one per family: openai, anthropic, gemini, bedrock) encodes a canonical
request into the family's body and decodes its answers, streams and error bodies.
`InboundCodec` (one per client API: OpenAI chat, completions, embeddings, Anthropic Messages,
Responses) parses what a client sent, renders canonical answers in the client's shape, and
renders errors in its envelope. A `StreamRelay` turns upstream stream bytes into the bytes the
client receives: `passthrough` relays (same family; `model` rewritten, usage observed) and
`TranslatingRelay` (a family decoder feeding an inbound encoder) share the interface.
`FamilyCodec` is the one `UpstreamCodec` implementation: a family module's functions as fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aisix.errors import GatewayError
from aisix.wire.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
    UpstreamFault,
    Usage,
)

#: what a client asks of a target (the upstream API it needs)
Endpoint = Literal[
    "chat",
    "completions",
    "embeddings",
    "messages",
    "count_tokens",
    "responses",
    "images",
    "audio_transcriptions",
    "audio_translations",
    "audio_speech",
    "moderations",
    "rerank",
]


class StreamDecoder(Protocol):
    """Upstream stream bytes (SSE, AWS event-stream, …) → canonical events."""

    #: the family's terminal marker was seen (`[DONE]`, `message_stop`, …)
    done: bool

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Events completed by `data`; raises `GatewayError` for an error event or garbage."""
        ...

    def end(self) -> list[StreamEvent]:
        """Events of a final unterminated frame, at EOF."""
        ...


class UpstreamCodec(Protocol):
    """One wire family, seen from the gateway as a client of it."""

    @property
    def family(self) -> str: ...

    def encode_request(self, request: ChatRequest, model_name: str) -> dict[str, Any]:
        """The family's JSON body for a canonical request (stream flag included)."""
        ...

    def decode_response(self, body: dict[str, Any]) -> ChatResponse:
        """A non-stream answer; raises `UpstreamDecodeError` if it is malformed."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...

    def parse_error(self, body: bytes) -> UpstreamFault:
        """What an error answer's body says; empty fields when it is not the family's shape."""
        ...

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        """Usage of a same-family (passthrough) non-stream answer."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FamilyCodec:
    """An `UpstreamCodec` made of a family module's pure functions (no forwarding methods:
    each call is the function itself). `usage_field` names where a same-family answer keeps
    its usage, read by `read_usage`."""

    family: str
    encode_request: Callable[[ChatRequest, str], dict[str, Any]]
    decode_response: Callable[[dict[str, Any]], ChatResponse]
    stream_decoder: Callable[[], StreamDecoder]
    parse_error: Callable[[bytes], UpstreamFault]
    read_usage: Callable[[Any], Usage | None]
    usage_field: str = "usage"

    def usage_of(self, body: dict[str, Any]) -> Usage | None:
        return self.read_usage(body.get(self.usage_field))


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingFamilyCodec(FamilyCodec):
    """A `FamilyCodec` whose family also serves embeddings (an `EmbeddingCodec`)."""

    encode_embeddings: Callable[[EmbeddingRequest, str], dict[str, Any]]
    decode_embeddings: Callable[[dict[str, Any]], EmbeddingResponse]


class StreamRelay(Protocol):
    """Upstream bytes in, client bytes out, for one streamed attempt."""

    usage: Usage | None
    #: bytes of generated text seen (for an estimate when no usage arrives)
    generated_chars: int

    @property
    def done(self) -> bool:
        """The upstream ended the stream cleanly."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Client bytes for these upstream bytes (may be empty); raises `GatewayError`."""
        ...

    def end(self) -> bytes:
        """At upstream EOF: client bytes of a final unterminated frame."""
        ...

    def terminal(self) -> bytes:
        """What ends a clean stream for the client (`[DONE]`, `message_stop`, …)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """The final event of a stream that failed after its head."""
        ...


class StreamEncoder(Protocol):
    """Canonical events → the client's stream bytes (one per stream)."""

    def encode(self, events: list[StreamEvent]) -> bytes: ...

    def finish(self) -> bytes: ...

    def error(self, err: GatewayError) -> bytes: ...


class InboundCodec(Protocol):
    """One client API."""

    #: route label: "openai-chat", "anthropic-messages", …
    name: str
    #: the wire family a same-family target relays as bytes
    family: str
    #: what it needs from a target
    endpoint: Endpoint
    #: client headers (lowercase) relayed to same-family targets (`anthropic-beta`, …)
    forward_headers: frozenset[bytes]

    def parse(self, raw: bytes) -> dict[str, Any]:
        """The checked request body; raises `InvalidRequest` naming the field."""
        ...

    def to_canonical(self, body: dict[str, Any]) -> ChatRequest:
        """The canonical request for a translated attempt; raises `NotImplementedByAdapter`
        when this API cannot be translated (embeddings)."""
        ...

    def render(
        self, response: ChatResponse, alias: str, request_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The client's answer body for a translated attempt (`body`: the client's request)."""
        ...

    def stream_encoder(self, alias: str, request_id: str, body: dict[str, Any]) -> StreamEncoder:
        """The encoder of a translated stream (`body`: the client's request)."""
        ...

    def passthrough_stream(self, alias: str, body: dict[str, Any]) -> StreamRelay:
        """The relay of a same-family stream (model rewritten to `alias`, usage observed)."""
        ...

    def passthrough_answer(self, body: dict[str, Any], alias: str) -> dict[str, Any]:
        """A same-family non-stream answer with `model` := alias."""
        ...

    def error_body(self, err: GatewayError) -> bytes: ...


class EmbeddingCodec(Protocol):
    """A family that serves embeddings through its own API (Gemini, Bedrock, …)."""

    def encode_embeddings(self, request: EmbeddingRequest, model_name: str) -> dict[str, Any]: ...

    def decode_embeddings(self, body: dict[str, Any]) -> EmbeddingResponse: ...
