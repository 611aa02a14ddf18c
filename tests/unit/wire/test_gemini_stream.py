"""`streamGenerateContent?alt=sse` → canonical events (golden SSE fixtures), fed whole and
byte by byte, and relayed to OpenAI chunks through the translating relay."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from aisix.errors import UpstreamDecodeError, UpstreamError, UpstreamServerError
from aisix.wire.gemini import CODEC
from aisix.wire.gemini.encode import THOUGHT_MARK
from aisix.wire.openai_in import CHAT
from aisix.wire.translate import TranslatingRelay
from aisix.wire.types import (
    Finish,
    StreamEvent,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"


def events_of(data: bytes, *, bytewise: bool = False) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    out: list[StreamEvent] = []
    if bytewise:
        for i in range(len(data)):
            out.extend(decoder.feed(data[i : i + 1]))
    else:
        out.extend(decoder.feed(data))
    assert not decoder.done  # Gemini streams have no end marker: done only at EOF
    out.extend(decoder.end())
    assert decoder.done
    return out


@pytest.mark.parametrize("bytewise", [False, True])
def test_text_stream_events(bytewise: bool) -> None:
    events = events_of((FIXTURES / "stream_text.sse").read_bytes(), bytewise=bytewise)
    assert isinstance(events[0], StreamStart) and events[0].id == "stream-1"
    assert [e.text for e in events if isinstance(e, ThinkingDelta)] == ["Thinking about it"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, world!"
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    reports = [e.usage for e in events if isinstance(e, UsageReport)]
    assert len(reports) == 2  # the repeated identical report is not sent twice
    last = reports[-1]
    assert (last.prompt_tokens, last.completion_tokens, last.total_tokens) == (10, 9, 19)
    assert (last.cached_tokens, last.reasoning_tokens) == (6, 5)


def test_tool_call_stream_events() -> None:
    events = events_of((FIXTURES / "stream_tool_call.sse").read_bytes())
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert starts[0].id.startswith("call_") and starts[0].id.endswith(THOUGHT_MARK + "c2lnLTE=")
    assert starts[1].id == "fc-given-id"
    assert [(d.index, orjson.loads(d.arguments)) for d in deltas] == [
        (0, {"city": "Paris"}),
        (1, {}),
    ]
    assert [e.reason for e in events if isinstance(e, Finish)] == ["tool_calls"]


def test_error_chunk_mid_stream_raises_the_mapped_upstream_error() -> None:
    decoder = CODEC.stream_decoder()
    with pytest.raises(UpstreamError) as caught:
        decoder.feed((FIXTURES / "stream_error.sse").read_bytes())
    assert isinstance(caught.value, UpstreamServerError) and caught.value.retryable


def test_eof_before_a_finish_reason_is_a_decode_error() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(b'data: {"candidates": [{"content": {"parts": [{"text": "Hal"}]}}]}\r\n\r\n')
    with pytest.raises(UpstreamDecodeError):
        decoder.end()
    assert not decoder.done


@pytest.mark.parametrize("frame", [b"data: {oops\n\n", b"data: [1, 2]\n\n", b'data: "x"\n\n'])
def test_garbage_chunks_are_decode_errors(frame: bytes) -> None:
    with pytest.raises(UpstreamDecodeError):
        CODEC.stream_decoder().feed(frame)


def test_final_chunk_without_blank_line_is_read_at_eof() -> None:
    decoder = CODEC.stream_decoder()
    assert decoder.feed(b'data: {"candidates": [{"content": {"parts": [{"text": "x"}]}, ') == []
    events = decoder.feed(b'"finishReason": "MAX_TOKENS"}]}')
    events += decoder.end()
    assert [e.reason for e in events if isinstance(e, Finish)] == ["length"]


def test_blocked_prompt_stream_finishes_with_content_filter() -> None:
    frame = b'data: {"promptFeedback": {"blockReason": "SAFETY"}}\r\n\r\n'
    events = events_of(frame)
    assert [e.reason for e in events if isinstance(e, Finish)] == ["content_filter"]


def test_relayed_to_an_openai_client_as_chat_chunks_under_the_alias() -> None:
    encoder = CHAT.stream_encoder(
        "gemini-prod", "req-9", {"stream_options": {"include_usage": True}}
    )
    relay = TranslatingRelay(CODEC.stream_decoder(), encoder)
    out = relay.feed((FIXTURES / "stream_tool_call.sse").read_bytes()) + relay.end()
    assert relay.done
    out += relay.terminal()
    frames = [f[len(b"data: ") :] for f in out.split(b"\n\n") if f.startswith(b"data: ")]
    assert frames[-1] == b"[DONE]"
    chunks = [orjson.loads(f) for f in frames[:-1]]
    assert {c["model"] for c in chunks} == {"gemini-prod"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    calls = [
        call
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [c["function"]["name"] for c in calls if "id" in c] == ["get_weather", "get_time"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 42
    assert relay.usage is not None and relay.usage.prompt_tokens == 30
