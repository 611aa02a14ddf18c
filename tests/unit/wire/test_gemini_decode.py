"""Gemini answers, errors and embeddings → canonical (golden fixtures), and round trips:
a decoded answer sent back as history re-encodes to the same Gemini parts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aisix.errors import UpstreamDecodeError
from aisix.wire.gemini import CODEC, VERTEX_CODEC, retry_delay
from aisix.wire.gemini.encode import THOUGHT_MARK
from aisix.wire.openai_in import CHAT, EmbeddingsInbound
from aisix.wire.types import ChatRequest, EmbeddingRequest, Message, TextPart, ThinkingPart

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_text_answer_with_thoughts_and_cached_usage() -> None:
    response = CODEC.decode_response(fixture("generate_text.json"))
    assert response.id == "mV0zaPzQB8ymz7IPv9rV8Ak"
    assert response.message.text() == "Hello! How can I help?"
    assert isinstance(response.message.content[0], ThinkingPart)
    assert response.message.content[0].text == "The user wants a short greeting."
    assert response.finish_reason == "stop"
    usage = response.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 31, 151)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (100, 22)


def test_text_answer_renders_as_an_openai_completion_under_the_alias() -> None:
    response = CODEC.decode_response(fixture("generate_text.json"))
    body = CHAT.render(response, "gemini-prod", "req-1", {})
    assert body["model"] == "gemini-prod"
    assert body["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert body["choices"][0]["message"]["reasoning_content"] == (
        "The user wants a short greeting."
    )
    assert body["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 31,
        "total_tokens": 151,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 22},
    }


def test_function_calls_get_synthesised_ids_and_tool_calls_finish() -> None:
    response = CODEC.decode_response(fixture("generate_tool_call.json"))
    assert response.finish_reason == "tool_calls"
    assert response.message.content == []
    first, second = response.message.tool_calls
    assert (first.name, json.loads(first.arguments)) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert first.id.startswith("call_") and first.id.endswith(
        THOUGHT_MARK + "CiQBVKhc7sig-nature=="
    )
    assert second.id.startswith("call_") and THOUGHT_MARK not in second.id
    assert first.id != second.id
    body = CHAT.render(response, "alias", "r", {})
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_answer_round_trips_as_history() -> None:
    answer = fixture("generate_tool_call.json")
    response = CODEC.decode_response(answer)
    results = [
        Message("tool", [TextPart('{"temp": 21}')], tool_call_id=response.message.tool_calls[0].id),
        Message("tool", [TextPart("12:00")], tool_call_id=response.message.tool_calls[1].id),
    ]
    request = ChatRequest("a", [Message("user", [TextPart("q")]), response.message, *results])
    contents = CODEC.encode_request(request, "m")["contents"]
    assert contents[1] == answer["candidates"][0]["content"]  # same parts, signature included
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("generate_safety.json", "content_filter"),
        ("generate_max_tokens.json", "length"),
        ("prompt_blocked.json", "content_filter"),
    ],
)
def test_finish_reasons(name: str, reason: str) -> None:
    response = CODEC.decode_response(fixture(name))
    assert response.finish_reason == reason


@pytest.mark.parametrize(
    "gemini", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"]
)
def test_every_filter_reason_is_content_filter(gemini: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": gemini}]}
    assert CODEC.decode_response(body).finish_reason == "content_filter"


def test_blocked_prompt_has_no_text_and_prompt_usage() -> None:
    response = CODEC.decode_response(fixture("prompt_blocked.json"))
    assert response.message.text() == "" and response.message.tool_calls == []
    assert response.usage is not None and response.usage.prompt_tokens == 14


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"candidates": "nope"},
        {"candidates": [{"content": {"parts": "x"}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png"}}]}}]},
        {"candidates": [{"content": "text"}]},
    ],
)
def test_malformed_answers_are_decode_errors(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamDecodeError):
        CODEC.decode_response(body)


def test_untrusted_usage_numbers_are_clamped() -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": -5,
            "candidatesTokenCount": 2**70,
            "cachedContentTokenCount": "lots",
            "totalTokenCount": True,
        },
    }
    usage = CODEC.decode_response(body).usage
    assert usage is not None
    assert usage.prompt_tokens == 0 and usage.cached_tokens == 0
    assert usage.completion_tokens == 1 << 40


def test_inline_image_answer() -> None:
    body = {
        "candidates": [
            {
                "content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
                "finishReason": "STOP",
            }
        ]
    }
    [part] = CODEC.decode_response(body).message.content
    assert part.data == "iVBO" and part.media_type == "image/png"  # type: ignore[union-attr]


def test_error_bodies() -> None:
    fault = CODEC.parse_error(raw("error_429.json"))
    assert fault.code == "RESOURCE_EXHAUSTED" and fault.type == "RESOURCE_EXHAUSTED"
    assert fault.message is not None and fault.message.startswith("You exceeded your current quota")
    assert retry_delay(raw("error_429.json")) == 36.0
    assert CODEC.parse_error(raw("error_400.json")).code == "INVALID_ARGUMENT"
    vertex = CODEC.parse_error(raw("error_vertex_stream.json"))
    assert vertex.code == "PERMISSION_DENIED" and "denied" in (vertex.message or "")
    assert retry_delay(raw("error_400.json")) is None
    assert CODEC.parse_error(b"<html>bad gateway</html>").message is None
    assert CODEC.parse_error(b'{"error": "flat"}').message is None


def embedding(inputs: list[str], dimensions: int | None = None) -> EmbeddingRequest:
    return EmbeddingRequest("alias", inputs, dimensions=dimensions)


def test_embeddings_single_batch_and_predict_bodies() -> None:
    assert CODEC.embedding_method("gemini-embedding-001", 1) == "embedContent"
    assert CODEC.encode_embeddings(embedding(["hi"], 8), "gemini-embedding-001") == {
        "content": {"parts": [{"text": "hi"}]},
        "outputDimensionality": 8,
    }
    assert CODEC.embedding_method("text-embedding-004", 2) == "batchEmbedContents"
    assert CODEC.encode_embeddings(embedding(["a", "b"]), "text-embedding-004") == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
        ]
    }
    assert VERTEX_CODEC.embedding_method("text-embedding-005", 1) == "predict"
    assert VERTEX_CODEC.embedding_method("gemini-embedding-001", 3) == "batchEmbedContents"
    assert VERTEX_CODEC.encode_embeddings(embedding(["a", "b"], 4), "text-embedding-005") == {
        "instances": [{"content": "a"}, {"content": "b"}],
        "parameters": {"outputDimensionality": 4},
    }


def test_embedding_answers_decode_in_order_with_usage() -> None:
    one = CODEC.decode_embeddings(fixture("embed_content.json"))
    assert one.vectors == [[0.013168517, -0.00871193, -0.046782672, 0.00069969177]]
    batch = CODEC.decode_embeddings(fixture("batch_embed_contents.json"))
    assert batch.vectors == [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]] and batch.usage is None
    predicted = VERTEX_CODEC.decode_embeddings(fixture("vertex_predict.json"))
    assert predicted.vectors == [[0.0123, -0.0456], [0.0789, 0.0012]]
    assert predicted.usage is not None and predicted.usage.prompt_tokens == 10
    rendered = EmbeddingsInbound.render_embeddings(batch, "emb-alias", None)
    assert rendered["model"] == "emb-alias"
    assert [d["embedding"] for d in rendered["data"]] == batch.vectors


@pytest.mark.parametrize(
    "body", [{}, {"embedding": {"values": ["x"]}}, {"embeddings": [{"values": None}]}]
)
def test_malformed_embeddings_are_decode_errors(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamDecodeError):
        CODEC.decode_embeddings(body)
