"""The canonical chat structs every wire family translates to and from (no I/O).

A request that crosses wire families (an Anthropic Messages call served by an OpenAI model,
a chat call served by Gemini) is decoded by its inbound codec into a `ChatRequest`, encoded by
the target family's codec, and its answer comes back as a `ChatResponse` (or, streamed, as a
sequence of `StreamEvent`s) that the inbound codec renders. Same-family calls never build these:
they are relayed as bytes with only `model` rewritten. Fields a family has and the canonical
form lacks travel in `extra` (kept for the same family, dropped, and counted, for others).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aisix.errors import UpstreamFault

__all__ = ["UpstreamFault"]  # defined with the errors it feeds; re-exported for codecs

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

#: the largest token count accepted from an upstream; bigger or negative values are clamped
#: (an upstream's numbers are untrusted input: 2**63 must not reach ledgers or Lua scripts)
MAX_TOKENS_REPORTED = 1 << 40


def clamp_tokens(value: Any) -> int:
    """A token count from an upstream as a sane int: non-ints are 0, range [0, 2**40]."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return value if value < MAX_TOKENS_REPORTED else MAX_TOKENS_REPORTED


@dataclass(slots=True)
class Usage:
    """Token counts of one answer, as the upstream reported them (or as estimated).
    `prompt_tokens` includes cached reads (`cached_tokens`) and cache writes."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False
    #: prompt tokens written to a provider cache (Anthropic `cache_creation_input_tokens`)
    cache_creation_tokens: int = 0
    #: completion tokens spent on reasoning (OpenAI `reasoning_tokens`, Gemini thoughts)
    reasoning_tokens: int = 0

    @classmethod
    def of(
        cls,
        prompt: Any,
        completion: Any,
        cached: Any = 0,
        total: Any = None,
        cache_creation: Any = 0,
        reasoning: Any = 0,
    ) -> Usage:
        """Usage from untrusted upstream numbers, clamped; total defaults to the sum."""
        p, c = clamp_tokens(prompt), clamp_tokens(completion)
        t = clamp_tokens(total) if total is not None else 0
        return cls(
            prompt_tokens=p,
            completion_tokens=c,
            cached_tokens=min(clamp_tokens(cached), p),
            total_tokens=t or p + c,
            cache_creation_tokens=clamp_tokens(cache_creation),
            reasoning_tokens=clamp_tokens(reasoning),
        )


@dataclass(frozen=True, slots=True)
class MediaUnits:
    """Billable units of a media call besides tokens (priced by `pricing.media_cost_usd`)."""

    #: images generated
    images: int = 0
    #: seconds of input audio (transcriptions, translations), as the upstream reported them
    audio_seconds: float = 0.0
    #: characters of text to speak (audio speech)
    characters: int = 0


# --- content parts --------------------------------------------------------------------------


@dataclass(slots=True)
class TextPart:
    text: str
    #: family-native fields of the block (Anthropic `cache_control`, `citations`)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ImagePart:
    """An image by URL (`url`, may be a `data:` URL) or inline base64 (`data` + `media_type`)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FilePart:
    """A document (PDF, text) inline (`data` base64 + `media_type`) or by `url` / file id."""

    data: str | None = None
    media_type: str | None = None
    url: str | None = None
    file_id: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ThinkingPart:
    """Model reasoning; `redacted` carries an opaque blob in `signature` only."""

    text: str = ""
    signature: str | None = None
    redacted: bool = False


@dataclass(slots=True)
class NativePart:
    """A block only its own family understands (server tool use, search results, …): sent as
    is to that family, dropped (and counted) for the others."""

    family: str
    block: dict[str, Any]


Part = TextPart | ImagePart | FilePart | ThinkingPart | NativePart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    #: the arguments as a JSON text (OpenAI's form); families with objects encode/decode it
    arguments: str = "{}"


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: role "tool": the call this message answers
    tool_call_id: str | None = None
    name: str | None = None
    #: a tool result reported as an error (Anthropic `is_error`, Bedrock `status: error`)
    is_error: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The text parts joined (what a family without parts receives)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    #: JSON Schema of the arguments
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class NamedTool:
    """`tool_choice` naming one function."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    #: OpenAI `response_format` (`{"type": "json_schema", "json_schema": {...}}` / json_object)
    response_format: dict[str, Any] | None = None
    #: "low" | "medium" | "high" (OpenAI `reasoning_effort`, Responses `reasoning.effort`)
    reasoning_effort: str | None = None
    #: Anthropic `thinking.budget_tokens` / Gemini `thinkingBudget`
    thinking_budget: int | None = None
    n: int | None = None
    seed: int | None = None
    user: str | None = None
    #: the client asked for the usage chunk on a stream (OpenAI `stream_options.include_usage`)
    include_usage: bool = False
    #: the inbound family's fields with no canonical slot, by name (same-family use only)
    extra: dict[str, Any] = field(default_factory=dict)
    #: which inbound family `extra` belongs to ("openai", "anthropic", …)
    source_family: str = "openai"
    #: what the target family's encoder could not express ("top_k", "thinking", "document",
    #: "cache_control", …): encoders append a name per dropped field or block kind; the
    #: pipeline counts them in `aisix_translation_dropped_total{family,field}`
    dropped: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    message: Message
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    created: int = 0
    #: Anthropic `stop_sequence` when a stop sequence ended the answer
    stop_sequence: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- stream events --------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStart:
    """The stream is open (Anthropic `message_start`; OpenAI's first chunk)."""

    id: str = ""
    model: str = ""
    #: prompt-side usage known at the start (Anthropic reports input tokens here)
    usage: Usage | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    text: str = ""
    signature: str | None = None
    redacted: bool = False


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins; `index` is its position among this answer's tool calls."""

    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    stop_sequence: str | None = None


@dataclass(slots=True)
class UsageReport:
    """Usage seen on the stream; a later report replaces fields it sets (non-zero)."""

    usage: Usage


StreamEvent = (
    StreamStart | TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta | Finish | UsageReport
)


# --- embeddings -----------------------------------------------------------------------------


@dataclass(slots=True)
class EmbeddingRequest:
    """An embeddings call in canonical form (text inputs only; token arrays are OpenAI-only)."""

    model: str
    inputs: list[str]
    dimensions: int | None = None
    #: "float" or "base64": how the client wants vectors rendered (the inbound codec does it)
    encoding_format: str | None = None
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResponse:
    vectors: list[list[float]]
    usage: Usage | None = None
