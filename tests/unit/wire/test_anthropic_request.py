"""Anthropic request translation, both ways (contract §7.3 "anthropic" column, §6.9):
golden fixtures for chat → Messages and Messages → chat, the Messages round trip through the
canonical form, and each row of the table (tool choice, thinking, max_tokens, stops, drops)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic_helpers import fixture, raw_fixture

from aisix.errors import InvalidRequest
from aisix.wire.anthropic import CODEC, MESSAGES
from aisix.wire.openai import CODEC as OPENAI
from aisix.wire.openai_in import CHAT
from aisix.wire.types import (
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    NamedTool,
    NativePart,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
)


def chat(body: dict[str, Any]) -> ChatRequest:
    return CHAT.to_canonical(CHAT.parse(orjson.dumps(body)))


def messages(body: dict[str, Any]) -> ChatRequest:
    return MESSAGES.to_canonical(MESSAGES.parse(orjson.dumps(body)))


def simple(**fields: Any) -> ChatRequest:
    return ChatRequest(model="a", messages=[Message("user", [TextPart("hi")])], **fields)


# --- chat → Messages --------------------------------------------------------------------------


def test_chat_request_golden() -> None:
    request = chat(fixture("chat_request.json"))
    body = CODEC.encode_request(request, "claude-sonnet-4-5")
    assert body == fixture("chat_request.anthropic.json")
    # OpenAI-only fields are named, once each, for the drop metric
    assert sorted(request.dropped) == ["logprobs", "response_format", "seed"]


def test_chat_round_trip_through_anthropic() -> None:
    """chat → Messages → chat keeps every §7.3 row: messages (system and developer joined into
    one system turn), images, tool calls and results, tools, tool choice, sampling, stops;
    only fields Anthropic lacks are gone."""
    original = fixture("chat_request.json")
    anthropic_body = CODEC.encode_request(chat(original), "claude-alias")
    back = OPENAI.encode_request(messages(anthropic_body), "claude-alias")
    expected = {
        k: v for k, v in original.items() if k not in ("logprobs", "seed", "response_format")
    }
    expected["max_tokens"] = expected.pop("max_completion_tokens")
    system = {"role": "system", "content": "You are terse.\n\nAnswer in French."}
    expected["messages"] = [system, *original["messages"][2:]]
    assert back == expected


def test_max_tokens_defaults_to_4096_and_stream_is_set_only_when_asked() -> None:
    body = CODEC.encode_request(simple(), "m")
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4096,
    }
    assert CODEC.encode_request(simple(stream=True, max_tokens=9), "m")["max_tokens"] == 9


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (NamedTool("f"), None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: Any) -> None:
    request = simple(tools=[Tool("f")], tool_choice=choice, parallel_tool_calls=parallel)
    body = CODEC.encode_request(request, "m")
    assert body.get("tool_choice") == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("fields", "thinking", "max_tokens"),
    [
        ({"thinking_budget": 2000, "max_tokens": 8000}, 2000, 8000),
        ({"thinking_budget": 2000, "max_tokens": 1500}, 1499, 1500),  # max_tokens caps both
        ({"thinking_budget": 2000, "max_tokens": 500}, None, 500),  # too small to think
        ({"reasoning_effort": "low"}, 1024, 4096 + 1024),  # no cap: thinking on top
        ({"reasoning_effort": "medium"}, 2048, 4096 + 2048),
        ({"reasoning_effort": "high", "max_tokens": 4096}, 4095, 4096),
        ({"reasoning_effort": "none"}, None, 4096),
        ({"thinking_budget": 0}, None, 4096),
    ],
)
def test_thinking_from_budget_or_effort(
    fields: dict[str, Any], thinking: int | None, max_tokens: int
) -> None:
    request = simple(**fields)
    body = CODEC.encode_request(request, "m")
    if thinking is None:
        assert "thinking" not in body
        wanted = fields.get("thinking_budget") or fields.get("reasoning_effort") not in (
            None,
            "none",
        )
        assert request.dropped == (["thinking"] if wanted else [])
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": thinking}
    assert body["max_tokens"] == max_tokens


def test_sampling_and_stops() -> None:
    request = simple(temperature=0.1, top_p=0.5, top_k=20, stop=["x", "y"], user="u")
    body = CODEC.encode_request(request, "m")
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.1, 0.5, 20)
    assert body["stop_sequences"] == ["x", "y"]
    assert body["metadata"] == {"user_id": "u"}
    assert request.dropped == []


def test_n_above_one_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as refused:
        CODEC.encode_request(simple(n=2), "m")
    assert refused.value.status == 400 and refused.value.param == "n"
    assert "n" not in CODEC.encode_request(simple(n=1), "m")


def test_parts_without_an_anthropic_form_are_dropped_and_named() -> None:
    request = ChatRequest(
        model="a",
        messages=[
            Message(
                "user",
                [
                    TextPart("see"),
                    NativePart("openai", {"type": "input_audio", "input_audio": {}}),
                    ImagePart(url="https://x/y.png", detail="high"),
                    FilePart(),
                ],
            ),
            Message("assistant", [ThinkingPart("unsigned reasoning"), TextPart("ok")]),
            Message("user", [TextPart("again")], name="alice"),
        ],
    )
    body = CODEC.encode_request(request, "m")
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]
    assert body["messages"][1] == {"role": "assistant", "content": "ok"}
    assert body["messages"][2] == {"role": "user", "content": "again"}
    assert sorted(request.dropped) == [
        "document",
        "image_detail",
        "input_audio",
        "name",
        "thinking",
    ]


def test_tool_messages_open_a_user_turn_and_errors_are_flagged() -> None:
    request = ChatRequest(
        model="a",
        messages=[
            Message("user", [TextPart("go")]),
            Message("assistant", tool_calls=[ToolCall("c1", "f", "not json")]),
            Message("tool", [TextPart("boom")], tool_call_id="c1", is_error=True),
        ],
    )
    body = CODEC.encode_request(request, "m")
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    ]
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "boom", "is_error": True}
        ],
    }


def test_documents_by_every_source() -> None:
    text = "aGVsbG8="  # "hello"
    request = ChatRequest(
        model="a",
        messages=[
            Message(
                "user",
                [
                    FilePart(data="JVBERi0=", media_type="application/pdf", name="a.pdf"),
                    FilePart(data=text, media_type="text/plain"),
                    FilePart(url="https://x/doc.pdf"),
                    FilePart(file_id="file_011"),
                    FilePart(data="!!not-base64!!", media_type="text/plain"),
                ],
            )
        ],
    )
    content = CODEC.encode_request(request, "m")["messages"][0]["content"]
    assert [b["source"] for b in content] == [
        {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        {"type": "text", "media_type": "text/plain", "data": "hello"},
        {"type": "url", "url": "https://x/doc.pdf"},
        {"type": "file", "file_id": "file_011"},
    ]
    assert content[0]["title"] == "a.pdf"
    assert request.dropped == ["document"]


# --- Messages → chat --------------------------------------------------------------------------


def test_messages_request_to_chat_golden() -> None:
    request = MESSAGES.to_canonical(MESSAGES.parse(raw_fixture("messages_request.json")))
    assert OPENAI.encode_request(request, "gpt-4o") == fixture("messages_request.chat.json")
    assert sorted(set(request.dropped)) == [
        "search_result",
        "service_tier",
        "thinking",
        "tool:web_search_20250305",
        "top_k",
    ]


def test_messages_request_canonical_form() -> None:
    request = MESSAGES.to_canonical(MESSAGES.parse(raw_fixture("messages_request.json")))
    system, second, user, mid, assistant, tool, last = request.messages
    assert system.content == [
        TextPart("You are Claude Code.", {"cache_control": {"type": "ephemeral"}})
    ]
    assert (second.role, mid.role, mid.text()) == ("system", "system", "Mid-conversation reminder.")
    assert user.content[0] == TextPart(
        "Read this.", {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    )
    assert user.content[3] == FilePart(
        data="JVBERi0xLjQ=",
        media_type="application/pdf",
        name="spec.pdf",
        extra={"citations": {"enabled": True}},
    )
    assert (
        isinstance(user.content[5], NativePart) and user.content[5].block["type"] == "search_result"
    )
    assert assistant.content[:2] == [
        ThinkingPart("They want a summary.", "EqQBCkYIBxgCKkB"),
        ThinkingPart(signature="EmwKAhgBEgy3va3pzix", redacted=True),
    ]
    assert assistant.tool_calls == [ToolCall("toolu_01", "grep", '{"pattern":"TODO"}')]
    assert (tool.role, tool.tool_call_id, tool.is_error, tool.text()) == (
        "tool",
        "toolu_01",
        True,
        "3 matches",
    )
    assert last.text() == "Go on."
    assert (request.top_k, request.thinking_budget, request.tool_choice) == (40, 2048, "required")
    assert request.user == "u-1" and "metadata" not in request.extra
    assert request.extra == {"service_tier": "auto"}
    assert request.source_family == "anthropic"


def test_messages_round_trip_through_canonical() -> None:
    """Messages → canonical → Messages gives the request back (system blocks hoisted to the
    top-level `system` in order; server tools are Anthropic-only and travel by passthrough)."""
    original = fixture("messages_request.json")
    request = MESSAGES.to_canonical(MESSAGES.parse(raw_fixture("messages_request.json")))
    body = CODEC.encode_request(request, "claude-alias")
    expected = dict(original)
    expected.pop("stream")  # false is the default
    expected["system"] = [
        *original["system"],
        {"type": "text", "text": "Mid-conversation reminder."},
    ]
    expected["messages"] = [m for m in original["messages"] if m["role"] != "system"]
    expected["tools"] = original["tools"][:1]
    assert body == expected
    assert request.dropped == ["tool:web_search_20250305"]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "f"}, NamedTool("f"), None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ],
)
def test_inbound_tool_choice(choice: dict[str, Any], expected: Any, parallel: Any) -> None:
    request = messages(
        {
            "model": "a",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tool_choice": choice,
        }
    )
    assert (request.tool_choice, request.parallel_tool_calls) == (expected, parallel)


def test_tool_result_with_blocks_and_user_text_after_it() -> None:
    request = messages(
        {
            "model": "a",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "a"},
                                {"type": "image", "source": {"type": "url", "url": "https://i"}},
                            ],
                        },
                        {"type": "tool_result", "tool_use_id": "t2"},
                    ],
                }
            ],
        }
    )
    first, second = request.messages
    assert first.content == [TextPart("a"), ImagePart(url="https://i")]
    assert (second.tool_call_id, second.content) == ("t2", [])


# --- parse -----------------------------------------------------------------------------------


def parse_error(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as refused:
        MESSAGES.parse(body if isinstance(body, bytes) else orjson.dumps(body))
    return refused.value


BASE: dict[str, Any] = {
    "model": "a",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "x"}],
}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"messages": [{"role": "user", "content": ["text"]}]}, "messages"),
        ({"system": 5}, "system"),
        ({"system": ["x"]}, "system"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"model": ""}, "model"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_parse_names_the_bad_field(change: dict[str, Any], param: str) -> None:
    body = {**BASE, **change}
    body = {k: v for k, v in body.items() if v is not None}
    err = parse_error(body)
    assert err.status == 400 and err.param == param
    assert err.message.startswith("request payload is invalid: ")


def test_parse_refuses_non_json() -> None:
    assert parse_error(b"{nope").status == 400


def test_system_role_messages_and_every_block_type_are_accepted() -> None:
    body = {
        **BASE,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "s"}]},
            {"role": "user", "content": [{"type": "future_block", "x": 1}]},
        ],
    }
    assert MESSAGES.parse(orjson.dumps(body)) == body
    request = MESSAGES.to_canonical(body)
    assert request.messages[0] == Message("system", [TextPart("s")])
    assert request.messages[1].content == [
        NativePart("anthropic", {"type": "future_block", "x": 1})
    ]
