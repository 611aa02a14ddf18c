"""Anthropic streams: the upstream SSE decoder (golden canonical events, any read split, the
`event: error` frame), the Messages encoder (an OpenAI chat stream rendered as Anthropic events
in the documented order), the translated round trip, and the same-family passthrough relay."""

from __future__ import annotations

import orjson
import pytest
from anthropic_helpers import accumulate, events_json, fixture, pieces, raw_fixture, sse_events

from aisix.errors import (
    UpstreamDecodeError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from aisix.wire.anthropic import CODEC, MESSAGES
from aisix.wire.openai import CODEC as OPENAI
from aisix.wire.openai_in import CHAT
from aisix.wire.translate import TranslatingRelay
from aisix.wire.types import (
    Finish,
    StreamStart,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageReport,
)

STREAM = raw_fixture("stream_thinking_tools.sse")
#: an OpenAI client's request asking for the usage chunk
WANTS_USAGE = {"stream_options": {"include_usage": True}}


def decode(raw: bytes, size: int | None = None) -> list[object]:
    decoder = CODEC.stream_decoder()
    events: list[object] = []
    for chunk in pieces(raw, size) if size else [raw]:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.end())
    assert decoder.done
    return events


@pytest.mark.parametrize("size", [None, 1, 7, 64])
def test_decoder_golden_events_whatever_the_read_sizes(size: int | None) -> None:
    assert events_json(decode(STREAM, size)) == fixture("stream_thinking_tools.events.json")


def test_decoder_error_event_raises_with_its_message_after_the_events_before_it() -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(raw_fixture("stream_error.sse"))
    assert [type(e).__name__ for e in events] == ["StreamStart", "TextDelta"]
    with pytest.raises(UpstreamError) as failed:
        decoder.end()
    assert failed.value.message == "Overloaded"
    assert isinstance(failed.value, UpstreamServerError) and failed.value.retryable
    assert not decoder.done
    error_only = raw_fixture("stream_error.sse").split(b"\n\n")[3] + b"\n\n"
    with pytest.raises(UpstreamError):  # nothing before it: raised at once
        CODEC.stream_decoder().feed(error_only)


def test_decoder_ignores_ping_and_events_after_message_stop() -> None:
    decoder = CODEC.stream_decoder()
    raw = (
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert decoder.feed(raw) == [] and decoder.done
    assert decoder.feed(b'event: content_block_delta\ndata: {"garbage"\n\n') == []


@pytest.mark.parametrize(
    "frame",
    [
        b"event: content_block_delta\ndata: not json\n\n",
        b"event: content_block_delta\ndata: [1]\n\n",
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n',
    ],
)
def test_decoder_garbage_is_a_decode_error(frame: bytes) -> None:
    with pytest.raises(UpstreamDecodeError):
        CODEC.stream_decoder().feed(frame)


def test_decoder_unterminated_last_frame_is_read_at_eof() -> None:
    decoder = CODEC.stream_decoder()
    head = (
        b'event: message_delta\ndata: {"type":"message_delta",'
        b'"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}'
    )
    assert decoder.feed(head) == []
    assert decoder.end() == [Finish("stop"), UsageReport(Usage.of(0, 3))]


def test_anthropic_stream_translated_for_an_openai_client() -> None:
    relay = TranslatingRelay(
        CODEC.stream_decoder(), CHAT.stream_encoder("alias", "r1", WANTS_USAGE)
    )
    out = b"".join(relay.feed(p) for p in pieces(STREAM, 50)) + relay.end()
    assert relay.done
    out += relay.terminal()
    chunks = [data for _, data in sse_events(out)]
    assert chunks[-1] == "[DONE]"
    body = [c for c in chunks[:-1]]
    assert all(c["model"] == "alias" for c in body)
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body if c["choices"])
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in body if c["choices"]
    )
    calls = [
        d for c in body if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert text == "Okay, let's check the weather."
    assert reasoning == "Need the weather tool."
    assert (
        calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
        and calls[0]["function"]["name"] == "get_weather"
    )
    assert "".join(c["function"]["arguments"] for c in calls) == '{"location": "San Francisco, CA"}'
    finishes = [c["choices"][0]["finish_reason"] for c in body if c["choices"]]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    assert body[-1]["choices"] == [] and body[-1]["usage"] == {
        "prompt_tokens": 2272,
        "completion_tokens": 89,
        "total_tokens": 2361,
        "prompt_tokens_details": {"cached_tokens": 1800},
    }
    assert relay.usage == Usage.of(2272, 89, 1800)


def test_openai_stream_as_anthropic_events_in_the_documented_order() -> None:
    relay = TranslatingRelay(OPENAI.stream_decoder(), MESSAGES.stream_encoder("alias", "req-7", {}))
    out = b"".join(relay.feed(p) for p in pieces(raw_fixture("chat_stream.sse"), 33)) + relay.end()
    assert relay.done
    out += relay.terminal()
    events = sse_events(out)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = accumulate(out)
    assert message["id"] == "msg_req7" and message["model"] == "alias"
    assert message["content"] == [
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 25,
        "output_tokens": 17,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 32,
    }


def test_translated_round_trip_rebuilds_the_same_message() -> None:
    """Anthropic SSE → canonical events → Anthropic SSE: a client accumulates the same
    blocks, stop reason and usage from both."""
    encoder = MESSAGES.stream_encoder("claude-sonnet-4-5-20250929", "r", {})
    out = encoder.encode(decode(STREAM)) + encoder.finish()  # type: ignore[arg-type]
    original, rebuilt = accumulate(STREAM), accumulate(out)
    assert rebuilt["content"] == original["content"]
    assert rebuilt["stop_reason"] == original["stop_reason"] == "tool_use"
    assert rebuilt["usage"] == {
        "input_tokens": 472,
        "output_tokens": 89,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1800,
    }


def test_encoder_redacted_thinking_and_signature() -> None:
    encoder = MESSAGES.stream_encoder("a", "r", {})
    out = encoder.encode(
        [
            StreamStart(usage=Usage.of(10, 0)),
            ThinkingDelta(signature="opaque", redacted=True),
            ThinkingDelta("think"),
            ThinkingDelta(signature="sig"),
            TextDelta("hi"),
            ToolCallDelta(3, '{"x":1}'),  # arguments before any start: block opened anyway
            ToolCallStart(4, "t4", "g"),
            Finish("stop", "END"),
        ]
    )
    out += encoder.finish()
    message = accumulate(out)
    assert message["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "think", "signature": "sig"},
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "toolu_msg_r_3", "name": "", "input": {"x": 1}},
        {"type": "tool_use", "id": "t4", "name": "g", "input": {}},
    ]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", "END")
    assert message["usage"]["input_tokens"] == 10


def test_encoder_empty_stream_and_error() -> None:
    encoder = MESSAGES.stream_encoder("a", "r", {})
    assert [n for n, _ in sse_events(encoder.finish())] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    [(name, data)] = sse_events(
        encoder.error(UpstreamTimeout("upstream request timed out after 5ms"))
    )
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "upstream request timed out after 5ms"},
    }


# --- same-family relay -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 13, 4096])
def test_passthrough_relays_bytes_with_only_model_rewritten(size: int) -> None:
    relay = MESSAGES.passthrough_stream("my-alias", {})
    out = b"".join(relay.feed(p) for p in pieces(STREAM, size)) + relay.end()
    assert relay.done
    out += relay.terminal()
    original = sse_events(STREAM)
    relayed = sse_events(out)
    assert relayed[0][1]["message"]["model"] == "my-alias"
    original[0][1]["message"]["model"] = "my-alias"
    assert relayed == original
    # every frame but message_start is byte-identical
    assert out.split(b"\n\n")[1:] == STREAM.split(b"\n\n")[1:]
    assert relay.usage == Usage.of(2272, 89, 1800)
    assert relay.generated_chars == len(
        "Need the weather tool.Okay, let's check the weather."
    ) + len('{"location": "San Francisco, CA"}')


def test_passthrough_reads_cache_writes_and_sends_message_stop_when_missing() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "model": "claude",
            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 100, "output_tokens": 1},
        },
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 9},
    }
    raw = b"".join(
        b"event: " + k.encode() + b"\ndata: " + orjson.dumps(v) + b"\n\n"
        for k, v in (("message_start", start), ("message_delta", delta))
    )
    relay = MESSAGES.passthrough_stream("a", {})
    out = relay.feed(raw)
    assert not relay.done
    assert relay.usage == Usage(
        prompt_tokens=105, completion_tokens=9, total_tokens=114, cache_creation_tokens=100
    )
    assert [n for n, _ in sse_events(out + relay.terminal())] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]


def test_passthrough_error_event_is_a_mid_stream_failure() -> None:
    relay = MESSAGES.passthrough_stream("a", {})
    raw = raw_fixture("stream_error.sse")
    before = relay.feed(raw)  # the frames before the error still reach the client
    assert [n for n, _ in sse_events(before)] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    with pytest.raises(UpstreamError) as failed:
        relay.end()
    assert failed.value.message == "Overloaded"
    with pytest.raises(UpstreamError):
        MESSAGES.passthrough_stream("a", {}).feed(raw.split(b"\n\n")[3] + b"\n\n")
    # the upstream's own error event is what the client gets (its type tells it to retry)
    [(name, data)] = sse_events(relay.error(failed.value))
    assert (name, data) == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    # a failure of the gateway's own (a timeout) is in the gateway's terms
    [(_, own)] = sse_events(relay.error(UpstreamTimeout("upstream request timed out after 9ms")))
    assert own["error"]["type"] == "timeout_error"


def test_message_delta_usage_overwrites_field_by_field() -> None:
    """`message_delta` usage is cumulative, and omits the fields that did not change: an
    omitted `input_tokens` keeps the `message_start` value (the prompt is not re-counted from
    the cache fields alone), in the decoder and in the passthrough relay alike."""
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "model": "c",
            "usage": {
                "input_tokens": 100,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 500,
                "output_tokens": 1,
            },
        },
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {
            "output_tokens": 40,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 500,
        },
    }
    raw = b"".join(
        b"event: " + str(d["type"]).encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n"
        for d in (start, delta)
    )
    expected = Usage.of(2600, 40, 2000, cache_creation=500)
    relay = MESSAGES.passthrough_stream("a", {})
    relay.feed(raw)
    assert relay.usage == expected
    events = CODEC.stream_decoder().feed(raw)
    assert events[-1] == UsageReport(expected)
    translated = TranslatingRelay(
        CODEC.stream_decoder(), CHAT.stream_encoder("a", "r", WANTS_USAGE)
    )
    translated.feed(raw)
    assert translated.usage == expected


def test_encoder_repeated_tool_call_start_keeps_one_block() -> None:
    encoder = MESSAGES.stream_encoder("a", "r", {})
    out = encoder.encode(
        [
            ToolCallStart(0, "call_1", "f"),
            ToolCallDelta(0, '{"a":'),
            ToolCallStart(0, "call_1", "f"),  # repeated, as some servers send it
            ToolCallDelta(0, "1}"),
            ToolCallStart(1, "call_2", "g"),
            ToolCallDelta(1, "{}"),
            Finish("tool_calls"),
        ]
    )
    message = accumulate(out + encoder.finish())
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_passthrough_keeps_multi_line_data_framed() -> None:
    raw = b'event: content_block_delta\ndata: {"type":"content_block_delta",\ndata: "index":0}\n\n'
    out = MESSAGES.passthrough_stream("a", {}).feed(raw)
    assert out == raw
    assert sse_events(out) == [("content_block_delta", {"type": "content_block_delta", "index": 0})]


@pytest.mark.parametrize(
    ("kind", "cls", "status", "retryable"),
    [
        ("overloaded_error", UpstreamServerError, 502, True),
        ("api_error", UpstreamServerError, 502, True),
        ("rate_limit_error", UpstreamRateLimited, 429, False),
        ("invalid_request_error", UpstreamError, 502, False),
        (None, UpstreamError, 502, False),
    ],
)
def test_error_events_are_classified_by_type(
    kind: str | None, cls: type[UpstreamError], status: int, retryable: bool
) -> None:
    error: dict[str, object] = {"message": "boom"}
    if kind is not None:
        error["type"] = kind
    frame = b"event: error\ndata: " + orjson.dumps({"type": "error", "error": error}) + b"\n\n"
    for feed in (CODEC.stream_decoder().feed, MESSAGES.passthrough_stream("a", {}).feed):
        with pytest.raises(UpstreamError) as failed:
            feed(frame)
        assert type(failed.value) is cls
        assert (failed.value.status, failed.value.retryable) == (status, retryable)
        assert failed.value.message == "boom"
