"""Token estimates and money: what a request may use before dispatch, and what it cost after.

`estimate_request` implements the contract's pre-dispatch estimate (§9.3): the prompt is the
UTF-8 bytes of all text in the request (messages, system, prompt, input) divided by 4 and
rounded up; token-id arrays count one token per id; the completion cap is
`max_completion_tokens`, else `max_tokens`, else the configured default, and zero for
embeddings. `cost_usd` is §10.1's cost (plus the model's `per_request` price);
`media_cost_usd` prices images, audio seconds and speech characters; `worst_case_usd` is §10.2's
reservation, media units asked for included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aisix.events import MediaUnits, Usage
from aisix.resources import Pricing

_PER_MILLION = 1_000_000
#: a completion cap above this is taken as this (a token bucket holds at most 10**12)
MAX_COMPLETION_CAP = 10**12
#: fields of a message or content block that carry text a model reads
_TEXT_FIELDS = ("content", "text", "arguments", "name", "input", "thinking", "reasoning_content")


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    completion_cap: int
    #: media calls: the most units the request may be billed for (images asked for, …)
    media: MediaUnits | None = None

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_cap


def estimate_request(body: dict[str, Any], default_completion: int, embeddings: bool) -> Estimate:
    """The §9.3 estimate for a parsed request body."""
    fast = _plain_chat_bytes(body)
    if fast is not None:
        prompt = -(-fast // 4)
    else:
        counter = _TextCounter()
        for field in ("messages", "system", "prompt", "input"):
            if field in body:
                counter.add(body[field], top=True)
        prompt = -(-counter.bytes // 4) + counter.token_ids
    if embeddings:
        return Estimate(prompt, 0)
    cap = _positive_int(body.get("max_completion_tokens"))
    if cap is None:
        cap = _positive_int(body.get("max_tokens"))
    return Estimate(prompt, default_completion if cap is None else cap)


def _plain_chat_bytes(body: dict[str, Any]) -> int | None:
    """Fast path for the common request: only `{"role", "content": str}` messages.
    None means "not that shape": the general walk below counts it."""
    messages = body.get("messages")
    if type(messages) is not list or "system" in body or "prompt" in body or "input" in body:
        return None
    total = 0
    for message in messages:
        if type(message) is not dict or len(message) != 2 or "role" not in message:
            return None
        content = message.get("content")
        if type(content) is not str:
            return None
        total += len(content) if content.isascii() else len(content.encode("utf-8"))
    return total


class _TextCounter:
    """Walks messages / blocks / strings / token-id arrays and totals what the model reads."""

    __slots__ = ("bytes", "token_ids")

    def __init__(self) -> None:
        self.bytes = 0
        self.token_ids = 0

    def add(self, value: Any, top: bool = False) -> None:
        if isinstance(value, str):
            self.bytes += len(value.encode("utf-8"))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, int) and not isinstance(item, bool) and top:
                    self.token_ids += 1
                else:
                    self.add(item, top=top and isinstance(item, list))
        elif isinstance(value, dict):
            for name in _TEXT_FIELDS:
                if name in value:
                    field = value[name]
                    if isinstance(field, dict):  # Anthropic tool_use input: JSON arguments
                        self.bytes += len(orjson.dumps(field))
                    else:
                        self.add(field)
            if "function" in value:
                self.add(value["function"])
            if "tool_calls" in value:
                self.add(value["tool_calls"])


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value if value < MAX_COMPLETION_CAP else MAX_COMPLETION_CAP
    return None


def cost_usd(pricing: Pricing | None, usage: Usage) -> float:
    """§10.1: cached prompt tokens at the cached price (or the input price); unpriced costs 0."""
    if pricing is None:
        return 0.0
    cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
    cached_price = pricing.cached_input_per_million
    if cached_price is None:
        cached_price = pricing.input_per_million
    return (
        (usage.prompt_tokens - cached) * pricing.input_per_million
        + cached * cached_price
        + usage.completion_tokens * pricing.output_per_million
    ) / _PER_MILLION + pricing.per_request


def media_cost_usd(pricing: Pricing | None, units: MediaUnits | None) -> float:
    """The price of a media call's units besides tokens (images, audio seconds, characters)."""
    if pricing is None or units is None:
        return 0.0
    return (
        units.images * pricing.per_image
        + units.audio_seconds * pricing.per_audio_second
        + units.characters * pricing.per_1k_characters / 1000
    )


def worst_case_usd(pricing: Pricing | None, est: Estimate) -> float:
    """§10.2: every prompt token at the dearer input price, the whole completion cap as output."""
    if pricing is None:
        return 0.0
    input_price = max(pricing.input_per_million, pricing.cached_input_per_million or 0.0)
    tokens = (
        est.prompt_tokens * input_price + est.completion_cap * pricing.output_per_million
    ) / _PER_MILLION
    return tokens + pricing.per_request + media_cost_usd(pricing, est.media)
