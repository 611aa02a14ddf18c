"""The Anthropic Messages wire family (contract §6.9, §7.3).

`CODEC` (`upstream`) is the family seen as an upstream: canonical requests encoded as Messages
bodies, Messages answers, SSE streams and error bodies decoded. `MESSAGES` (`inbound`) is the
client API `POST /v1/messages`: parse, canonical form for translated attempts, answers and
streams rendered in Anthropic shape, and the same-family byte relay. `COUNT_TOKENS`
(`count_tokens`) serves `POST /v1/messages/count_tokens`: native relay or a local estimate.
Shared pieces (usage, stop reasons, SSE framing, error bodies) live in `common`.
"""

from aisix.wire.anthropic.common import FAMILY, parse_error, usage_of
from aisix.wire.anthropic.count_tokens import COUNT_TOKENS, CountTokens, estimate_tokens
from aisix.wire.anthropic.inbound import MESSAGES, MessagesInbound
from aisix.wire.anthropic.upstream import CODEC
from aisix.wire.base import InboundCodec, UpstreamCodec

# the codecs satisfy the seams' protocols (checked by mypy)
_UPSTREAM: UpstreamCodec = CODEC
_INBOUND: tuple[InboundCodec, ...] = (MESSAGES, COUNT_TOKENS)

__all__ = [
    "CODEC",
    "COUNT_TOKENS",
    "FAMILY",
    "MESSAGES",
    "CountTokens",
    "MessagesInbound",
    "estimate_tokens",
    "parse_error",
    "usage_of",
]
