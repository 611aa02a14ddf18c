"""Azure's answers through the provider's codec (the OpenAI family's, with Azure's quirks).

Golden files in tests/fixtures/azure: non-stream answers decode to canonical responses
(content filter finish, tool calls, cached-token usage); streams, fed byte by byte and whole,
decode to the same canonical events (Azure's id-less `prompt_filter_results` opening chunk and
its late filter annotations produce none); a canonical request encodes to the chat body the
deployment receives, and the round trip canonical → Azure body → canonical keeps every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from aisix.providers.azure import CODEC, AzureProvider
from aisix.providers.base import TLSConfig, UpstreamCall
from aisix.resources import DirectModel, ProviderKey, validate_value
from aisix.wire.types import (
    ChatRequest,
    Finish,
    ImagePart,
    Message,
    NamedTool,
    StreamEvent,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageReport,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "azure"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def decode_stream(raw: bytes, step: int | None) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    size = step or len(raw)
    for i in range(0, len(raw), size):
        events.extend(decoder.feed(raw[i : i + size]))
    events.extend(decoder.end())
    assert decoder.done
    return events


def test_chat_answer() -> None:
    answer = CODEC.decode_response(load("chat_completion.json"))
    assert answer.message.role == "assistant"
    assert answer.message.text() == "Hello! How can I help you today?"
    assert answer.finish_reason == "stop"
    assert answer.usage == Usage(18, 9, 0, 27)
    assert answer.id == "chatcmpl-AzUre0example0000000000000001"
    assert CODEC.usage_of(load("chat_completion.json")) == Usage(18, 9, 0, 27)


def test_output_filtered_answer_has_no_content() -> None:
    answer = CODEC.decode_response(load("chat_content_filter.json"))
    assert answer.finish_reason == "content_filter"
    assert answer.message.content == [] and answer.message.tool_calls == []
    assert answer.usage == Usage(24, 5, 0, 29)


def test_tool_call_answer_with_cached_prompt_tokens() -> None:
    answer = CODEC.decode_response(load("chat_tool_calls.json"))
    assert answer.finish_reason == "tool_calls"
    assert answer.message.tool_calls == [
        ToolCall("call_Q8zb5F3mW2kL0x9aP7vR1tYc", "get_weather", '{"city":"Paris"}')
    ]
    assert answer.message.content == []
    assert answer.usage == Usage(61, 16, 32, 77)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_chat_stream(step: int | None) -> None:
    events = decode_stream((FIXTURES / "stream_chat.sse").read_bytes(), step)
    assert events == [
        StreamStart("chatcmpl-AzUre0example0000000000000005", "gpt-4o-2024-08-06"),
        TextDelta("Hello"),
        TextDelta(" there"),
        TextDelta("!"),
        Finish("stop"),
        UsageReport(Usage(9, 4, 0, 13)),
    ]


@pytest.mark.parametrize("step", [None, 3])
def test_output_filtered_stream_finishes_with_content_filter(step: int | None) -> None:
    events = decode_stream((FIXTURES / "stream_content_filter.sse").read_bytes(), step)
    assert events[0] == StreamStart("chatcmpl-AzUre0example0000000000000005", "gpt-4o-2024-08-06")
    assert events[1:] == [
        TextDelta("Here is how"),
        Finish("content_filter"),
        UsageReport(Usage(12, 3, 0, 15)),
    ]


def test_tool_call_stream() -> None:
    events = decode_stream((FIXTURES / "stream_tool_calls.sse").read_bytes(), 5)
    assert events[1:] == [
        ToolCallStart(0, "call_Q8zb5F3mW2kL0x9aP7vR1tYc", "get_weather"),
        ToolCallDelta(0, '{"city"'),
        ToolCallDelta(0, ':"Paris"}'),
        Finish("tool_calls"),
        UsageReport(Usage(61, 16, 0, 77)),
    ]


def canonical_request() -> ChatRequest:
    return ChatRequest(
        model="alias",
        messages=[
            Message("system", [TextPart("Be brief.")]),
            Message(
                "user",
                [TextPart("What is this?"), ImagePart(url="https://example.com/cat.png")],
            ),
            Message("assistant", tool_calls=[ToolCall("call_1", "lookup", '{"q":"cat"}')]),
            Message("tool", [TextPart("a cat")], tool_call_id="call_1"),
        ],
        stream=True,
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        tools=[Tool("lookup", "Look a thing up", {"type": "object", "properties": {}})],
        tool_choice=NamedTool("lookup"),
        include_usage=False,
        source_family="anthropic",
    )


def provider() -> AzureProvider:
    key = validate_value(
        "provider_keys",
        {
            "display_name": "az",
            "adapter": "azure-openai",
            "secret": "k",
            "api_base": "contoso",
            "request": {"param_renames": {"max_tokens": "max_completion_tokens"}},
        },
    )
    model = validate_value(
        "models",
        {"display_name": "a", "provider": "azure", "model_name": "gpt4o", "provider_key_id": "p"},
    )
    assert isinstance(key, ProviderKey) and isinstance(model, DirectModel)
    return AzureProvider(key, model, TLSConfig(), send=_no_send)


async def _no_send(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("no token request expected")


def test_translated_requests_go_to_the_chat_deployment() -> None:
    target = provider()
    request = target.build(UpstreamCall("messages", True, "req-9", canonical=canonical_request()))
    assert request.url == (
        "https://contoso.openai.azure.com/openai/deployments/gpt4o/chat/completions"
        "?api-version=2024-10-21"
    )
    body = orjson.loads(request.body)
    assert body["model"] == "gpt4o"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body  # key's rename
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png"},
    }
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"q":"cat"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.2, 0.9, ["END"])
    assert request.headers["Accept"] == "text/event-stream"


def test_encode_then_answer_round_trip() -> None:
    """What the encoder writes for an assistant turn decodes back to the same message."""
    original = Message(
        "assistant",
        [TextPart("Checking.")],
        tool_calls=[ToolCall("call_7", "lookup", '{"q": "x"}')],
    )
    body = CODEC.encode_request(ChatRequest(model="m", messages=[original]), "gpt4o")
    answer = {
        "id": "chatcmpl-rt",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": body["messages"][0], "finish_reason": "tool_calls"}],
        "prompt_filter_results": load("chat_completion.json")["prompt_filter_results"],
    }
    decoded = CODEC.decode_response(answer)
    assert decoded.message.text() == "Checking."
    assert decoded.message.tool_calls == original.tool_calls
    assert decoded.finish_reason == "tool_calls"
