"""What an upstream target is to the pipeline: a prepared request and response parsers.

An adapter turns a provider key plus a single-target model into an `UpstreamTarget` once per
snapshot (URLs normalised, credential headers built), so a request only fills in the body.
Translation functions are pure; the I/O lives in `aisix.providers.transport`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aisix.events import Usage

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class UpstreamTarget(Protocol):
    """One single-target model's upstream, ready to build requests for."""

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
    prompt = data.get("prompt_tokens")
    completion = data.get("completion_tokens", 0)
    total = data.get("total_tokens")
    if not isinstance(prompt, int):
        return None
    completion = completion if isinstance(completion, int) else 0
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached if isinstance(cached, int) else 0,
        total_tokens=total if isinstance(total, int) else prompt + completion,
    )
