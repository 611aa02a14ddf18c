"""Canonical → Gemini request encoding (contract §7.3 gemini column), on golden fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aisix.errors import InvalidRequest
from aisix.wire.gemini import CODEC
from aisix.wire.gemini.encode import THOUGHT_MARK, schema
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

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def test_openai_chat_request_encodes_to_the_golden_gemini_body() -> None:
    canonical = CHAT.to_canonical(fixture("openai_chat_request.json"))
    body = CODEC.encode_request(canonical, "gemini-2.5-flash")
    assert body == fixture("gemini_request.json")
    assert canonical.dropped == ["schema:additionalProperties", "logit_bias", "user"]


def test_no_model_or_stream_in_the_body() -> None:
    body = CODEC.encode_request(ChatRequest("a", [user("hi")], stream=True), "gemini-2.0-flash")
    assert body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_n_greater_than_one_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(ChatRequest("a", [user("hi")], n=2), "m")
    assert caught.value.status == 400 and caught.value.param == "n"
    body = CODEC.encode_request(ChatRequest("a", [user("hi")], n=1), "m")
    assert "candidateCount" not in body.get("generationConfig", {})


def test_system_only_conversation_is_a_400_naming_messages() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CODEC.encode_request(ChatRequest("a", [Message("system", [TextPart("x")])]), "m")
    assert caught.value.param == "messages"


def test_anthropic_style_request_maps_top_k_and_thinking_budget() -> None:
    request = ChatRequest(
        "a",
        [user("hi")],
        max_tokens=1000,
        top_k=40,
        thinking_budget=2048,
        stop=["\n\nHuman:"],
        extra={"metadata": {"user_id": "x"}},
        source_family="anthropic",
    )
    config = CODEC.encode_request(request, "m")["generationConfig"]
    assert config == {
        "maxOutputTokens": 1000,
        "topK": 40,
        "stopSequences": ["\n\nHuman:"],
        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
    }
    assert request.dropped == ["metadata"]


@pytest.mark.parametrize(
    ("effort", "budget"), [("none", 0), ("minimal", 128), ("medium", 2048), ("high", 4096)]
)
def test_reasoning_effort_becomes_a_thinking_budget(effort: str, budget: int) -> None:
    request = ChatRequest("a", [user("hi")], reasoning_effort=effort)
    thinking = CODEC.encode_request(request, "m")["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinkingBudget": budget, "includeThoughts": budget > 0}


def test_unknown_reasoning_effort_is_dropped() -> None:
    request = ChatRequest("a", [user("hi")], reasoning_effort="extreme")
    assert "generationConfig" not in CODEC.encode_request(request, "m")
    assert request.dropped == ["reasoning_effort"]


def test_json_object_response_format() -> None:
    request = ChatRequest("a", [user("hi")], response_format={"type": "json_object"})
    config = CODEC.encode_request(request, "m")["generationConfig"]
    assert config == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (NamedTool("lookup"), {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
    ],
)
def test_tool_choice_maps_to_function_calling_config(choice: Any, config: Any) -> None:
    request = ChatRequest("a", [user("hi")], tools=[Tool("lookup")], tool_choice=choice)
    body = CODEC.encode_request(request, "m")
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_consecutive_tool_results_merge_into_one_user_turn_matched_by_name() -> None:
    calls = [ToolCall("call_a", "first", '{"x": 1}'), ToolCall("toolu_b", "second", "{}")]
    request = ChatRequest(
        "a",
        [
            user("go"),
            Message("assistant", [TextPart("calling")], calls),
            Message("tool", [TextPart("plain text result")], tool_call_id="call_a"),
            Message("tool", [TextPart("boom")], tool_call_id="toolu_b", is_error=True),
            user("and?"),
        ],
    )
    contents = CODEC.encode_request(request, "m")["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"] == [
        {"text": "calling"},
        {"functionCall": {"name": "first", "args": {"x": 1}}},
        {"functionCall": {"name": "second", "args": {}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "first", "response": {"output": "plain text result"}}},
        {"functionResponse": {"name": "second", "response": {"error": "boom"}}},
        {"text": "and?"},
    ]


def test_thought_signature_in_a_call_id_goes_back_on_its_function_call() -> None:
    call = ToolCall(f"call_abc{THOUGHT_MARK}c2lnLTE=", "get_weather", '{"city":"Paris"}')
    request = ChatRequest("a", [user("q"), Message("assistant", tool_calls=[call])])
    part = CODEC.encode_request(request, "m")["contents"][1]["parts"][0]
    assert part == {
        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
        "thoughtSignature": "c2lnLTE=",
    }


def test_unparseable_tool_arguments_are_sent_empty_and_counted() -> None:
    call = ToolCall("c", "f", "{not json")
    request = ChatRequest("a", [user("q"), Message("assistant", tool_calls=[call])])
    part = CODEC.encode_request(request, "m")["contents"][1]["parts"][0]
    assert part == {"functionCall": {"name": "f", "args": {}}}
    assert request.dropped == ["tool_call_arguments"]


def test_files_thinking_and_foreign_blocks() -> None:
    request = ChatRequest(
        "a",
        [
            Message(
                "user",
                [
                    FilePart(data="JVBERi0=", media_type="application/pdf"),
                    FilePart(url="gs://bucket/report.pdf"),
                    FilePart(file_id="files/abc123", media_type="text/plain"),
                    FilePart(file_id="file-openai-1"),
                    ImagePart(url="https://example.com/a.webp"),
                    NativePart("anthropic", {"type": "search_result"}),
                    NativePart("gemini", {"executableCode": {"code": "1+1"}}),
                ],
            ),
            Message("assistant", [ThinkingPart("hmm", signature="sig"), TextPart("ok")]),
            user("next"),
        ],
    )
    contents = CODEC.encode_request(request, "m")["contents"]
    assert contents[0]["parts"] == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/report.pdf"}},
        {"fileData": {"mimeType": "text/plain", "fileUri": "files/abc123"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp"}},
        {"executableCode": {"code": "1+1"}},
    ]
    assert contents[1] == {"role": "model", "parts": [{"text": "ok"}]}
    assert request.dropped == ["file_id", "search_result", "thinking"]


def test_schema_inlines_refs_and_drops_unsupported_keywords() -> None:
    dropped: list[str] = []
    raw = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "properties": {
            "at": {"$ref": "#/$defs/Point"},
            "kind": {"const": "pin"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "nested": {"type": "object", "properties": {}},
        },
        "required": ["at"],
        "additionalProperties": False,
    }
    assert schema(raw, dropped) == {
        "type": "OBJECT",
        "properties": {
            "at": {"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}},
            "kind": {"enum": ["pin"]},
            "note": {"type": "STRING", "nullable": True},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "nested": {"type": "OBJECT"},
        },
        "required": ["at"],
    }
    assert dropped == ["schema:uniqueItems", "schema:additionalProperties"]


def test_recursive_refs_stop_at_the_depth_limit() -> None:
    raw = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    out = schema(raw, [])
    depth = 0
    while out.get("properties"):
        out = out["properties"]["next"]
        depth += 1
    assert 5 < depth <= 40
