"""The Bedrock Converse codec (contract §7.3, "bedrock Converse" column) on recorded-shape
fixtures and event-stream frames, and the bedrock secret parser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from aisix.credentials.bedrock import parse
from aisix.errors import InvalidRequest, UpstreamDecodeError, UpstreamError
from aisix.wire import bedrock
from aisix.wire.openai_in import chat_to_canonical, render_chat
from aisix.wire.types import EmbeddingRequest, Finish, TextDelta, ToolCallDelta, ToolCallStart

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fakes.bedrock_upstream import event, frame

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bedrock"
PNG = "iVBORw0KGgo="


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def canonical(**body: Any) -> Any:
    return chat_to_canonical({"model": "alias", **body})


def test_request_rows_of_the_translation_table() -> None:
    request = canonical(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "No emoji."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[
            {
                "type": "function",
                "function": {"name": "look", "description": "d", "parameters": {"type": "object"}},
            }
        ],
        tool_choice={"type": "function", "function": {"name": "look"}},
        max_completion_tokens=77,
        temperature=0.5,
        top_p=0.9,
        stop="END",
    )
    body = bedrock.encode_request(request, "anthropic.claude-v2")
    assert body["system"] == [{"text": "Be brief."}, {"text": "No emoji."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1] == {
        "image": {"format": "png", "source": {"bytes": PNG}}
    }
    assert body["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "look", "input": {"q": 1}}}
    ]
    # the tool result and the next user words merge into one user turn (Converse alternates)
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "a cat"}], "status": "success"}},
        {"text": "thanks"},
    ]
    assert body["inferenceConfig"] == {
        "maxTokens": 77,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "look",
                    "description": "d",
                    "inputSchema": {"json": {"type": "object"}},
                }
            }
        ],
        "toolChoice": {"tool": {"name": "look"}},
    }
    assert request.dropped == []


def test_unexpressible_fields_are_dropped_and_counted() -> None:
    request = canonical(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
                ],
            }
        ],
        response_format={"type": "json_object"},
        logit_bias={"1": 2},
    )
    bedrock.encode_request(request, "m")
    assert sorted(request.dropped) == ["image_url", "logit_bias", "response_format"]


def test_n_above_one_is_refused_at_parse() -> None:
    with pytest.raises(InvalidRequest):
        canonical(messages=[{"role": "user", "content": "x"}], n=2)


def test_tool_use_answer_with_reasoning_and_cache_usage() -> None:
    answer = bedrock.decode_response(fixture("converse_tool_use.json"))
    assert answer.finish_reason == "tool_calls"
    assert answer.message.text() == "Let me check."
    call = answer.message.tool_calls[0]
    assert (call.id, call.name, orjson.loads(call.arguments)) == (
        "tooluse_abc",
        "get_weather",
        {"city": "Paris", "unit": "c"},
    )
    usage = answer.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (160, 40, 30)
    assert usage.cache_creation_tokens == 10
    chat = render_chat(answer, "alias", "req1")
    assert chat["choices"][0]["message"]["tool_calls"][0]["id"] == "tooluse_abc"
    assert chat["choices"][0]["message"]["reasoning_content"] == "The user wants weather."
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 30}


def test_guardrail_is_content_filter() -> None:
    answer = bedrock.decode_response(fixture("converse_guardrail.json"))
    assert answer.finish_reason == "content_filter"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"output": {"message": {"content": 5}}},
        {"output": {"message": {"content": [1]}}},
        {"output": {"message": {"content": []}}, "stopReason": [1]},
    ],
)
def test_malformed_answers_are_decode_errors(bad: Any) -> None:
    with pytest.raises(UpstreamDecodeError):
        bedrock.decode_response(bad)


def stream_frames() -> bytes:
    return b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event("contentBlockDelta", {"delta": {"text": "Hel"}, "contentBlockIndex": 0}),
            event("contentBlockDelta", {"delta": {"text": "lo"}, "contentBlockIndex": 0}),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event(
                "contentBlockStart",
                {"start": {"toolUse": {"toolUseId": "tu", "name": "f"}}, "contentBlockIndex": 1},
            ),
            event(
                "contentBlockDelta",
                {"delta": {"toolUse": {"input": '{"a":'}}, "contentBlockIndex": 1},
            ),
            event(
                "contentBlockDelta", {"delta": {"toolUse": {"input": "1}"}}, "contentBlockIndex": 1}
            ),
            event("messageStop", {"stopReason": "tool_use"}),
            event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}}),
        ]
    )


@pytest.mark.parametrize("split", [1, 7, 64, 10_000])
def test_stream_frames_split_anywhere(split: int) -> None:
    data = stream_frames()
    decoder = bedrock.StreamDecoder()
    events = []
    for i in range(0, len(data), split):
        events.extend(decoder.feed(data[i : i + split]))
    assert decoder.done
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello"
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [(0, "tu", "f")]
    args = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(args) == {"a": 1}
    assert [e.reason for e in events if isinstance(e, Finish)] == ["tool_calls"]


def test_corrupt_frame_and_exception_frame() -> None:
    damaged = bytearray(event("contentBlockDelta", {"delta": {"text": "x"}}))
    damaged[-6] ^= 0xFF
    with pytest.raises(UpstreamDecodeError):
        bedrock.StreamDecoder().feed(bytes(damaged))
    failure = frame(
        {
            ":message-type": "exception",
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
        },
        b'{"message": "slow"}',
    )
    with pytest.raises(UpstreamError, match="throttlingException"):
        bedrock.StreamDecoder().feed(failure)


def test_error_bodies() -> None:
    fault = bedrock.parse_error(b'{"__type": "com.amazon#ValidationException", "message": "bad"}')
    assert (fault.message, fault.code) == ("bad", "ValidationException")
    assert bedrock.parse_error(b"not json").message is None


def test_embeddings_titan_and_cohere() -> None:
    titan = bedrock.encode_embeddings(
        EmbeddingRequest("m", ["hi"], dimensions=256), "amazon.titan-embed-text-v2:0"
    )
    assert titan == {"inputText": "hi", "dimensions": 256}
    cohere = bedrock.encode_embeddings(EmbeddingRequest("m", ["a", "b"]), "cohere.embed-english-v3")
    assert cohere == {"texts": ["a", "b"], "input_type": "search_document"}
    with pytest.raises(InvalidRequest):
        bedrock.encode_embeddings(EmbeddingRequest("m", ["a", "b"]), "amazon.titan-embed-text-v2:0")
    decoded = bedrock.decode_embeddings({"embedding": [1, 2.5], "inputTextTokenCount": 3})
    assert decoded.vectors == [[1.0, 2.5]] and decoded.usage is not None
    assert decoded.usage.prompt_tokens == 3
    assert bedrock.decode_embeddings({"embeddings": {"float": [[0.1]]}}).vectors == [[0.1]]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("not json", "JSON"),
        ('{"region": "mars"}', "region"),
        ('{"region": "us-east-1", "access_key_id": "AK"}', "go together"),
        ('{"region": "us-east-1", "session_token": "t"}', "needs"),
        ('{"region": "us-east-1", "extra": "x"}', "unknown"),
    ],
)
def test_secret_parser_refuses_without_echoing(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse(secret)
    assert "AK" not in str(refused.value) or message == "go together"


def test_secret_parser_accepts_both_forms() -> None:
    chain = parse('{"region": "eu-west-1"}')
    assert chain.region == "eu-west-1" and not chain.static
    static = parse('{"region": "us-east-1", "access_key_id": "AK", "secret_access_key": "SK"}')
    assert static.static and static.secret_access_key == "SK"
