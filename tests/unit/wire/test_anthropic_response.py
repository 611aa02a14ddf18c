"""Anthropic answers, both ways: a Messages answer decoded into the canonical response (and
rendered for an OpenAI client), a canonical response rendered as a Messages answer (§6.9),
stop reasons and usage (cache reads and writes) per §7.3, malformed answers and error bodies."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic_helpers import fixture

from aisix.errors import UpstreamDecodeError
from aisix.wire.anthropic import CODEC, MESSAGES, parse_error
from aisix.wire.openai_in import CHAT
from aisix.wire.types import (
    ChatResponse,
    Message,
    NativePart,
    TextPart,
    ThinkingPart,
    ToolCall,
    UpstreamFault,
    Usage,
)


def test_answer_decodes_every_block_kind() -> None:
    response = CODEC.decode_response(fixture("answer_thinking_tools.json"))
    thinking, redacted, text, cited, server = response.message.content
    assert thinking == ThinkingPart(
        "The user wants the weather; call the tool.", "EqQBCkYIBxgCKkBsig"
    )
    assert redacted == ThinkingPart(signature="EmwKAhgBEgy3va3pzix/redacted", redacted=True)
    assert text == TextPart("I'll check ")
    assert cited.text == "the weather." and cited.extra["citations"][0]["cited_text"] == "weather"  # type: ignore[union-attr]
    assert isinstance(server, NativePart) and server.block["type"] == "server_tool_use"
    assert response.message.tool_calls == [
        ToolCall(
            "toolu_01A09q90qw90lq917835lq9", "get_weather", '{"city":"Paris","unit":"celsius"}'
        )
    ]
    assert response.finish_reason == "tool_calls"
    # prompt = input + cache reads + cache writes; cached = cache reads
    assert response.usage == Usage(
        prompt_tokens=2150,
        completion_tokens=85,
        cached_tokens=2000,
        total_tokens=2235,
        cache_creation_tokens=30,
    )
    assert CODEC.usage_of(fixture("answer_thinking_tools.json")) == response.usage


def test_answer_rendered_for_an_openai_client() -> None:
    response = CODEC.decode_response(fixture("answer_thinking_tools.json"))
    body = CHAT.render(response, "alias", "req1", {})
    choice = body["choices"][0]
    assert body["model"] == "alias"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather."
    assert choice["message"]["reasoning_content"] == "The user wants the weather; call the tool."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'},
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 2150,
        "completion_tokens": 85,
        "total_tokens": 2235,
        "prompt_tokens_details": {"cached_tokens": 2000},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish: str | None) -> None:
    body = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    assert CODEC.decode_response(body).finish_reason == finish


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": "text"},
        {"content": ["x"]},
        {"content": [{"type": "text", "text": 5}]},
        {"content": [{"type": "tool_use", "name": "f"}]},
        {"content": [], "stop_reason": 3},
    ],
)
def test_malformed_answers_are_decode_errors(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamDecodeError) as failed:
        CODEC.decode_response(body)
    assert failed.value.status == 502 and failed.value.code == "upstream_decode_error"


def test_untrusted_usage_is_clamped() -> None:
    usage = {"input_tokens": -5, "output_tokens": 2**70, "cache_read_input_tokens": "many"}
    decoded = CODEC.decode_response({"content": [], "usage": usage}).usage
    assert decoded is not None
    assert (decoded.prompt_tokens, decoded.completion_tokens, decoded.cached_tokens) == (
        0,
        1 << 40,
        0,
    )
    assert CODEC.decode_response({"content": [], "usage": {"foo": 1}}).usage is None


def test_canonical_response_rendered_as_a_messages_answer() -> None:
    response = ChatResponse(
        id="chatcmpl-9",
        model="gpt-4o",
        message=Message(
            "assistant",
            [ThinkingPart("hmm"), TextPart("Hello"), TextPart(" world")],
            [ToolCall("call_1", "f", '{"a": 1}'), ToolCall("", "g", "oops")],
        ),
        finish_reason="length",
        usage=Usage.of(100, 7, cached=60, cache_creation=10),
    )
    body = MESSAGES.render(response, "alias", "req-1:2", {})
    assert body == {
        "id": "msg_req12",
        "type": "message",
        "role": "assistant",
        "model": "alias",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": ""},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": " world"},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "toolu_msg_req12_4", "name": "g", "input": {}},
        ],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 7,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 60,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_render_stop_reasons(finish: Any, stop_reason: str) -> None:
    response = ChatResponse("i", "m", Message("assistant", [TextPart("x")]), finish_reason=finish)
    assert MESSAGES.render(response, "a", "r", {})["stop_reason"] == stop_reason


def test_answer_round_trip() -> None:
    """Messages answer → canonical → Messages answer keeps blocks, stop reason and usage."""
    original = fixture("answer_thinking_tools.json")
    rendered = MESSAGES.render(CODEC.decode_response(original), "alias", "r1", {})
    expected = [dict(b) for b in original["content"]]
    expected[2].pop("citations")  # null citations are not repeated
    assert rendered["content"] == expected
    assert rendered["stop_reason"] == original["stop_reason"]
    usage = {k: v for k, v in original["usage"].items() if k != "service_tier"}
    assert rendered["usage"] == usage


def test_passthrough_answer_rewrites_only_model() -> None:
    original = fixture("answer_thinking_tools.json")
    relayed = MESSAGES.passthrough_answer(fixture("answer_thinking_tools.json"), "alias")
    assert relayed == {**original, "model": "alias"}


def test_error_bodies() -> None:
    from anthropic_helpers import raw_fixture

    assert parse_error(raw_fixture("error_rate_limit.json")) == UpstreamFault(
        message="Number of request tokens has exceeded your per-minute rate limit",
        type="rate_limit_error",
    )
    assert CODEC.parse_error(b"<html>bad gateway</html>") == UpstreamFault()
    assert CODEC.parse_error(b'{"error": "flat"}') == UpstreamFault()
    assert CODEC.parse_error(b'{"type":"error","error":{"type":"api_error","message":""}}') == (
        UpstreamFault(type="api_error")
    )
