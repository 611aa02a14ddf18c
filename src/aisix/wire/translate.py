"""The relay of a translated stream: a family's decoder feeding an inbound protocol's encoder.

Implements `StreamRelay` over canonical events, so the proxy relays a Gemini stream to an
OpenAI client, or an OpenAI stream to an Anthropic client, the same way it relays a
same-family stream. Usage is merged from every report the upstream sends.
"""

from __future__ import annotations

from aisix.errors import GatewayError
from aisix.wire.base import StreamDecoder, StreamEncoder
from aisix.wire.openai_in import merge_usage
from aisix.wire.types import StreamEvent, StreamStart, TextDelta, ToolCallDelta, Usage, UsageReport


class TranslatingRelay:
    __slots__ = ("_decoder", "encoder", "generated_chars", "usage")

    def __init__(self, decoder: StreamDecoder, encoder: StreamEncoder) -> None:
        self._decoder = decoder
        self.encoder = encoder
        self.usage: Usage | None = None
        self.generated_chars = 0

    @property
    def done(self) -> bool:
        return self._decoder.done

    def _encode(self, events: list[StreamEvent]) -> bytes:
        for ev in events:
            if isinstance(ev, TextDelta):
                self.generated_chars += len(ev.text.encode())
            elif isinstance(ev, ToolCallDelta):
                self.generated_chars += len(ev.arguments.encode())
            elif isinstance(ev, UsageReport | StreamStart) and ev.usage is not None:
                self.usage = merge_usage(self.usage, ev.usage)
        return self.encoder.encode(events) if events else b""

    def feed(self, data: bytes) -> bytes:
        return self._encode(self._decoder.feed(data))

    def end(self) -> bytes:
        return self._encode(self._decoder.end())

    def terminal(self) -> bytes:
        return self.encoder.finish()

    def error(self, err: GatewayError) -> bytes:
        return self.encoder.error(err)
