"""Anthropic Messages inbound (contract §6.9): request checks, the chat translation of requests
and answers, and the event sequence a chat stream becomes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aisix.errors import InvalidRequest, UpstreamTimeout
from aisix.proxy.anthropic_in import MessagesStream, parse_messages, to_chat, to_message

TOOL = {"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}


def body(**fields: Any) -> bytes:
    base = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"stream": "yes"}, "stream"),
        ({"system": 3}, "system"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_messages(body(**fields))
    assert err.value.param == field
    assert err.value.message.startswith("request payload is invalid:")


def test_request_translation() -> None:
    request = parse_messages(
        body(
            system=[{"type": "text", "text": "Be brief."}],
            stop_sequences=["END"],
            temperature=0.2,
            stream=True,
            tools=[TOOL],
            tool_choice={"type": "tool", "name": "weather"},
            metadata={"user_id": "u-1"},
            top_k=5,  # no chat equivalent: dropped
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"c": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "tu1", "content": "Sunny"},
                        {"type": "text", "text": "Thanks. And this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA"},
                        },
                    ],
                },
            ],
        )
    )
    chat = to_chat(request)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "tu1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c":"P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tu1", "content": "Sunny"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Thanks. And this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            ],
        },
    ]
    assert chat["stop"] == ["END"] and chat["max_tokens"] == 10 and chat["stream"] is True
    assert chat["temperature"] == 0.2 and chat["user"] == "u-1" and "top_k" not in chat
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather",
                "parameters": TOOL["input_schema"],
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    for choice, expected in (("any", "required"), ("auto", "auto"), ("none", "none")):
        assert to_chat({**request, "tool_choice": {"type": choice}})["tool_choice"] == expected


def test_answer_translation() -> None:
    answer = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "weather", "arguments": '{"c": "P"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
    assert to_message(answer, "alias", "msg_1") == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "alias",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "c1", "name": "weather", "input": {"c": "P"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
    for finish, reason in (
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ):
        answer["choices"][0]["finish_reason"] = finish
        assert to_message(answer, "a", "m")["stop_reason"] == reason


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        parsed = orjson.loads(data[6:])
        assert parsed["type"] == kind[7:]
        out.append((kind[7:], parsed))
    return out


def test_stream_events_in_anthropic_order() -> None:
    stream = MessagesStream("alias", "msg_1")
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"c"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ': "P"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
    ]  # fmt: skip
    raw = b"".join(part for c in chunks if (part := stream.chunk(c)) is not None)
    got = events(raw + stream.finish())
    assert [kind for kind, _ in got] == [
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
    assert got[0][1]["message"]["model"] == "alias" and got[0][1]["message"]["id"] == "msg_1"
    assert got[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert got[2][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert got[5][1]["index"] == 1
    assert got[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "c1",
        "name": "weather",
        "input": {},
    }
    fragments = "".join(d["delta"]["partial_json"] for k, d in got[6:8])
    assert orjson.loads(fragments) == {"c": "P"}
    assert got[9][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[9][1]["usage"] == {"input_tokens": 9, "output_tokens": 4}


def test_a_failure_after_the_head_is_an_error_event() -> None:
    [(kind, data)] = events(MessagesStream.error(UpstreamTimeout("upstream request timed out")))
    assert kind == "error"
    assert data["error"] == {"type": "timeout_error", "message": "upstream request timed out"}


def test_an_empty_stream_still_starts_and_stops_the_message() -> None:
    kinds = [kind for kind, _ in events(MessagesStream("a", "msg_2").finish())]
    assert kinds == ["message_start", "message_delta", "message_stop"]
