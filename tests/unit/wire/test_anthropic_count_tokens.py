"""The count_tokens codec: request checks, the native answer relayed as it came, and the local
estimate (UTF-8 bytes of all text / 4, rounded up, + 1 per message), monotone in the prompt."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from aisix.errors import InvalidRequest, NotImplementedByAdapter, UpstreamServerError
from aisix.wire.anthropic import COUNT_TOKENS, estimate_tokens


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "a", "messages": [{"role": "user", "content": "hello"}], **fields}


def test_estimate_of_a_simple_prompt() -> None:
    assert estimate_tokens(body()) == math.ceil(5 / 4) + 1
    assert COUNT_TOKENS.estimate(body(system="be kind")) == {"input_tokens": math.ceil(12 / 4) + 1}


def test_estimate_counts_every_text_and_tool_schemas() -> None:
    tools = [{"name": "grep", "input_schema": {"type": "object"}}]
    rich = body(
        system=[{"type": "text", "text": "sys"}],
        tools=tools,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "ab"}, {"type": "image", "source": {}}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "grep", "input": {"q": 1}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "found"}],
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "data": "doc text"},
                        "title": "T",
                    },
                ],
            },
        ],
    )
    texts = ["sys", "ab", "grep", '{"q":1}', "found", "T", "doc text", orjson.dumps(tools).decode()]
    assert estimate_tokens(rich) == math.ceil(sum(len(t) for t in texts) / 4) + 3


def test_estimate_is_monotone_in_the_prompt() -> None:
    last = 0
    messages: list[dict[str, Any]] = []
    for i in range(30):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": "wörd " * i})
        now = estimate_tokens(body(messages=list(messages)))
        assert now > last
        last = now
    longer = estimate_tokens(body(messages=list(messages), system="x"))
    assert longer >= last
    assert (
        estimate_tokens(body(messages=list(messages), tools=[{"name": "f", "input_schema": {}}]))
        > longer
    )


def test_parse_needs_model_and_messages_but_not_max_tokens() -> None:
    raw = orjson.dumps(body())
    assert COUNT_TOKENS.parse(raw) == body()
    with pytest.raises(InvalidRequest) as refused:
        COUNT_TOKENS.parse(orjson.dumps({"model": "a"}))
    assert refused.value.param == "messages"
    with pytest.raises(InvalidRequest):
        COUNT_TOKENS.parse(orjson.dumps({"messages": [{"role": "user", "content": "x"}]}))


def test_native_answer_and_error_envelope() -> None:
    assert COUNT_TOKENS.passthrough_answer({"input_tokens": 42}, "alias") == {"input_tokens": 42}
    assert orjson.loads(COUNT_TOKENS.error_body(UpstreamServerError("upstream returned 500"))) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream returned 500"},
    }
    assert (COUNT_TOKENS.name, COUNT_TOKENS.family, COUNT_TOKENS.endpoint) == (
        "anthropic-count-tokens",
        "anthropic",
        "count_tokens",
    )


def test_no_stream_and_no_translation() -> None:
    with pytest.raises(InvalidRequest) as refused:
        COUNT_TOKENS.parse(orjson.dumps(body(stream=True)))
    assert refused.value.param == "stream"
    with pytest.raises(NotImplementedByAdapter):
        COUNT_TOKENS.to_canonical(body())
    assert COUNT_TOKENS.forward_headers == frozenset({b"anthropic-beta", b"anthropic-version"})
