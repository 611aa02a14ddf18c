"""The native Anthropic adapter end to end (contract §6.9, §7.2, §7.3): official SDKs as
clients, `aisix` as a subprocess, the fake Anthropic upstream (proven against the `anthropic`
SDK in test_fake_anthropic_selftest.py) behind it.

- anthropic SDK → aisix → Anthropic target: passthrough, native fields (thinking, documents,
  `cache_control`, `top_k`, system-role messages, `anthropic-beta`) reach the upstream as sent;
  answers and streams come back with only `model` changed; cache tokens are priced with
  `cached_input_per_million`.
- openai SDK chat → aisix → Anthropic target: translated both ways, stream and non-stream,
  tools, images, the usage chunk.
- count_tokens: native on the Anthropic target, a local estimate on an OpenAI one.
- upstream errors in the inbound protocol's envelope, before and after the stream head.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, GatewayFactory, wait_for

from fakes.anthropic_upstream import FakeAnthropicUpstream, Reply
from fakes.openai_upstream import FakeOpenAIUpstream

CLAUDE = "claude-prod"
UPSTREAM_CLAUDE = "claude-sonnet-4-5-20250929"
SECRET = "sk-ant-api03-provider-secret-for-tests"
PRICING = {"input_per_million": 3, "output_per_million": 15, "cached_input_per_million": 0.3}
CACHE_USAGE = {
    "input_tokens": 100,
    "output_tokens": 40,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 500,
}
IMAGE_B64 = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropicUpstream]:
    fake = FakeAnthropicUpstream(api_key=SECRET).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gw(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropicUpstream, fake_openai: FakeOpenAIUpstream
) -> Gateway:
    """Alias `claude-prod` on the fake Anthropic upstream (priced, no retries, no cooldown) and
    `gpt-4o-prod` on the fake OpenAI one; the caller key may use both."""
    g = gateway({"observability": {"access_log": True}})
    anthropic_key = g.create(
        "provider_keys",
        {
            "display_name": "anthropic-test",
            "adapter": "anthropic",
            "provider": "anthropic",
            "secret": SECRET,
            "api_base": fake_anthropic.url + "/v1",  # a pasted /v1 is stripped (§7.2)
        },
    )
    g.create(
        "models",
        {
            "display_name": CLAUDE,
            "provider": "anthropic",
            "model_name": UPSTREAM_CLAUDE,
            "provider_key_id": anthropic_key,
            "pricing": PRICING,
            "retries": 0,
            "cooldown": {"enabled": False},  # each failover test call tries it again
        },
    )
    g.create_model(ALIAS, g.create_provider_key(fake_openai.url))
    g.create_api_key(CALLER_KEY, [CLAUDE, ALIAS])
    g.wait_for_key(CALLER_KEY, CLAUDE)
    g.wait_for_key(CALLER_KEY, ALIAS)
    return g


def claude_sdk(g: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=g.proxy_url, api_key=CALLER_KEY, max_retries=0, timeout=15)


def access_record(g: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((r for r in g.access_log_lines() if r["request_id"] == request_id), None)

    record: dict[str, Any] = wait_for(find, 5.0, f"access log line of {request_id}")
    return record


def cost(prompt: int, cached: int, completion: int) -> float:
    return ((prompt - cached) * 3 + cached * 0.3 + completion * 15) / 1e6


# --- anthropic SDK → Anthropic target: passthrough ---------------------------------------------

NATIVE_BODY: dict[str, Any] = {
    "max_tokens": 2048,
    "system": [
        {
            "type": "text",
            "text": "You are a code assistant.",
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "The spec."},
                    "title": "spec",
                    "citations": {"enabled": True},
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Summarise the spec."},
            ],
        },
        {"role": "system", "content": "Reminder: be brief."},  # as current Claude Code sends
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Earlier thought.", "signature": "sig-earlier"},
                {"type": "text", "text": "Reading."},
            ],
        },
        {"role": "user", "content": "Go on."},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "metadata": {"user_id": "u-7"},
    "extra_body": {"top_k": 5},  # not a named parameter of this SDK version
}
SENT = {k: v for k, v in NATIVE_BODY.items() if k != "extra_body"} | {"top_k": 5}
BETA = "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31"


def test_messages_passthrough_keeps_native_fields_and_usage(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    fake_anthropic.script(
        Reply(content="Brief summary.", thinking="Plan the summary.", usage=CACHE_USAGE)
    )
    raw = claude_sdk(gw).messages.with_raw_response.create(
        model=CLAUDE,
        extra_headers={"anthropic-beta": BETA},
        **NATIVE_BODY,
    )
    message = raw.parse()
    assert message.model == CLAUDE
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == "sig-fake-0001"
    assert message.content[1].text == "Brief summary."
    assert message.usage.cache_read_input_tokens == 2000
    assert message.usage.cache_creation_input_tokens == 500
    request_id = raw.headers["x-aisix-request-id"]
    assert raw.headers["request-id"] == request_id

    [upstream] = fake_anthropic.requests
    assert upstream.path == "/v1/messages"
    assert upstream.json == {**SENT, "model": UPSTREAM_CLAUDE}  # relayed as sent
    assert upstream.headers["x-api-key"] == SECRET
    assert "authorization" not in upstream.headers  # the caller's key never goes upstream
    assert upstream.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert upstream.headers["anthropic-beta"] == BETA
    assert upstream.headers["x-aisix-request-id"] == request_id

    record = access_record(gw, request_id)
    prompt = 100 + 2000 + 500
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, 40)
    assert record["cost_usd"] == pytest.approx(cost(prompt, 2000, 40))
    assert SECRET not in gw.stdout_text() + gw.stderr_text()


def test_messages_passthrough_stream(gw: Gateway, fake_anthropic: FakeAnthropicUpstream) -> None:
    tool = {"id": "toolu_9", "name": "read_file", "input": {"path": "a.py"}}
    fake_anthropic.script(
        Reply(content="Reading it.", thinking="Need the file.", tool_uses=[tool], usage=CACHE_USAGE)
    )
    with claude_sdk(gw).messages.with_streaming_response.create(
        model=CLAUDE,
        stream=True,
        extra_headers={"anthropic-beta": BETA},
        tools=[{"name": "read_file", "input_schema": {"type": "object"}}],
        **NATIVE_BODY,
    ) as response:
        request_id = response.headers["x-aisix-request-id"]
        raw = b"".join(response.iter_bytes())
    frames = [f for f in raw.decode().split("\n\n") if f.strip()]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "ping" in names and "signature_delta" in raw.decode()
    start = orjson.loads(frames[0].split("\n")[1].removeprefix("data: "))
    assert start["message"]["model"] == CLAUDE
    # the SDK accumulates the relayed events into the upstream's message
    with claude_sdk(gw).messages.stream(model=CLAUDE, **NATIVE_BODY) as stream:
        final = stream.get_final_message()
    assert final.model == CLAUDE
    assert [b.type for b in final.content] == ["text"]
    assert fake_anthropic.requests[0].json["stream"] is True
    assert fake_anthropic.requests[0].headers["accept"] == "text/event-stream"
    assert fake_anthropic.requests[0].headers["anthropic-beta"] == BETA

    record = access_record(gw, request_id)
    prompt = 100 + 2000 + 500
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, 40)
    assert record["cost_usd"] == pytest.approx(cost(prompt, 2000, 40))


def test_messages_stream_thinking_and_tools_through_the_sdk(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    tool = {"id": "toolu_1", "name": "grep", "input": {"pattern": "TODO", "n": 3}}
    fake_anthropic.script(Reply(content="Searching.", thinking="grep it", tool_uses=[tool]))
    with claude_sdk(gw).messages.stream(
        model=CLAUDE,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[{"name": "grep", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "find todos"}],
    ) as stream:
        final = stream.get_final_message()
    thinking, text, call = final.content
    assert (thinking.thinking, thinking.signature) == ("grep it", "sig-fake-0001")  # type: ignore[union-attr]
    assert text.text == "Searching."  # type: ignore[union-attr]
    assert (call.id, call.name, call.input) == ("toolu_1", "grep", tool["input"])  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


# --- openai SDK chat → Anthropic target: translated --------------------------------------------


def test_chat_translated_with_tools_and_images(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    tool = {"id": "toolu_7", "name": "get_weather", "input": {"city": "Paris"}}
    fake_anthropic.script(Reply(content="Let me check.", tool_uses=[tool], usage=CACHE_USAGE))
    raw = gw.openai_client().chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "Be helpful."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{IMAGE_B64}"},
                    },
                ],
            },
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        tool_choice="required",
        temperature=0.3,
        stop=["END"],
        extra_headers={"anthropic-beta": "should-not-be-forwarded"},
    )
    answer = raw.parse()
    assert answer.model == CLAUDE and answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    [call] = choice.message.tool_calls or []
    assert call.id == "toolu_7" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2600, 40)
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2000

    [upstream] = fake_anthropic.requests
    assert upstream.path == "/v1/messages"
    assert upstream.json == {
        "model": UPSTREAM_CLAUDE,
        "system": "Be helpful.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64},
                    },
                ],
            }
        ],
        "max_tokens": 4096,
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "any"},
    }
    assert upstream.headers["x-api-key"] == SECRET
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in upstream.headers  # forwarded on native calls only
    record = access_record(gw, raw.headers["x-aisix-request-id"])
    assert record["cost_usd"] == pytest.approx(cost(2600, 2000, 40))


def test_chat_translated_tool_round_trip(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    gw.openai_client().chat.completions.create(
        model=CLAUDE,
        max_tokens=100,
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"P"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"L"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        ],
    )
    [upstream] = fake_anthropic.requests
    assert upstream.json["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "w", "input": {"c": "P"}},
                {"type": "tool_use", "id": "c2", "name": "w", "input": {"c": "L"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "rain"},
            ],
        },
    ]
    assert upstream.json["max_tokens"] == 100


def test_chat_translated_stream_with_usage_chunk(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    fake_anthropic.script(Reply(content="Streaming from Claude.", usage=CACHE_USAGE, chunks=4))
    stream = gw.openai_client().chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.model == CLAUDE for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming from Claude."
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (2600, 40)
    assert fake_anthropic.requests[0].json["stream"] is True

    fake_anthropic.script(Reply(content="No usage asked."))
    quiet = list(
        gw.openai_client().chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None for c in quiet) and quiet[-1].choices


def test_chat_translated_stream_tool_calls(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    tool = {"id": "toolu_s", "name": "lookup", "input": {"q": "aisix", "limit": 2}}
    fake_anthropic.script(Reply(content="", tool_uses=[tool]))
    chunks = list(
        gw.openai_client().chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "look it up"}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
            stream=True,
        )
    )
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_s" and calls[0].function.name == "lookup"
    arguments = "".join(t.function.arguments or "" for t in calls)
    assert orjson.loads(arguments) == tool["input"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# --- count_tokens ----------------------------------------------------------------------------


def test_count_tokens_native_and_estimated(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream, fake_openai: FakeOpenAIUpstream
) -> None:
    fake_anthropic.script(Reply(input_tokens=4242))
    messages: list[Any] = [{"role": "user", "content": "hello there"}]
    native = claude_sdk(gw).messages.count_tokens(
        model=CLAUDE, messages=messages, extra_headers={"anthropic-beta": BETA}
    )
    assert native.input_tokens == 4242
    [upstream] = fake_anthropic.requests
    assert upstream.path == "/v1/messages/count_tokens"
    assert upstream.json == {"model": UPSTREAM_CLAUDE, "messages": messages}
    assert upstream.headers["anthropic-beta"] == BETA

    short = claude_sdk(gw).messages.count_tokens(model=ALIAS, messages=messages)
    assert short.input_tokens == math.ceil(len("hello there") / 4) + 1  # bytes/4 + 1 per turn
    longer = claude_sdk(gw).messages.count_tokens(
        model=ALIAS,
        system="Be brief.",
        messages=[
            *messages,
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "more"},
        ],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
    )
    assert longer.input_tokens > short.input_tokens
    assert fake_openai.model_requests() == []  # estimated locally, no upstream call

    with pytest.raises(anthropic.NotFoundError):
        claude_sdk(gw).messages.count_tokens(model="nope", messages=messages)


# --- upstream errors ---------------------------------------------------------------------------


def test_upstream_errors_in_each_inbound_envelope(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    fake_anthropic.script(
        Reply.error(
            429,
            "Number of request tokens has exceeded your rate limit",
            "rate_limit_error",
            retry_after=7,
        )
    )
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude_sdk(gw).messages.create(model=CLAUDE, max_tokens=8, messages=messages)
    assert limited.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Number of request tokens has exceeded your rate limit",
        },
    }
    assert limited.value.response.headers["retry-after"] == "7"

    fake_anthropic.script(Reply.error(400, "messages.0: bad block", "invalid_request_error"))
    with pytest.raises(openai.BadRequestError) as bad:
        gw.openai_client().chat.completions.create(model=CLAUDE, messages=messages)
    assert bad.value.body == {"message": "messages.0: bad block", "type": "upstream_error"}

    fake_anthropic.script(Reply.error(529, "Overloaded", "overloaded_error"))
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude_sdk(gw).messages.create(model=CLAUDE, max_tokens=8, messages=messages)
    assert overloaded.value.status_code == 502
    assert overloaded.value.body["error"]["message"] == "upstream returned 529"  # type: ignore[index]


def test_upstream_rejecting_the_credentials_is_a_502(
    gateway: GatewayFactory, fake_anthropic: FakeAnthropicUpstream
) -> None:
    g = gateway()
    key = g.create(
        "provider_keys",
        {
            "display_name": "ant",
            "adapter": "anthropic",
            "secret": "sk-ant-wrong",
            "api_base": fake_anthropic.url,
        },
    )
    g.create(
        "models",
        {
            "display_name": CLAUDE,
            "provider": "anthropic",
            "model_name": "m",
            "provider_key_id": key,
        },
    )
    g.create_api_key(CALLER_KEY, [CLAUDE])
    g.wait_for_key(CALLER_KEY, CLAUDE)
    with pytest.raises(anthropic.APIStatusError) as rejected:
        claude_sdk(g).messages.create(
            model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert rejected.value.status_code == 502
    assert (
        rejected.value.body["error"]["message"]  # type: ignore[index]
        == "upstream rejected the provider credentials (401)"
    )
    assert "sk-ant-wrong" not in str(rejected.value.body)


def test_error_event_after_the_head_in_each_inbound_envelope(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    fake_anthropic.script(Reply(content="partial answer", error_after_events=4))
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        claude_sdk(gw).messages.stream(
            model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        list(stream)
    assert "Overloaded" in str(failed.value)

    fake_anthropic.script(Reply(content="partial answer", error_after_events=4))
    messages_body = {
        "model": CLAUDE,
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    relayed = gw.proxy("POST", "/v1/messages", messages_body, api_key=CALLER_KEY)
    last = [f for f in relayed.text.split("\n\n") if f.strip()][-1]
    assert last.split("\n") == [  # the upstream's own error event, relayed
        "event: error",
        'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    ]

    fake_anthropic.script(Reply(content="partial answer", error_after_events=4))
    body = {"model": CLAUDE, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = gw.proxy("POST", "/v1/chat/completions", body, api_key=CALLER_KEY)
    assert response.status == 200
    data = response.sse_data()
    assert "[DONE]" not in data
    assert orjson.loads(data[-1]) == {"error": {"message": "Overloaded", "type": "upstream_error"}}
    chunks = [orjson.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "parti"  # the first of three deltas of "partial answer" came before the error
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])


def test_claude_code_style_call_with_query_and_x_api_key(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    """What Claude Code sends: `?beta=true`, the caller key in `x-api-key`, its beta header
    and a system-role message; relayed as sent (the caller key never goes upstream)."""
    body = {
        "model": CLAUDE,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are Claude Code."}]},
            {"role": "user", "content": "hi"},
        ],
    }
    response = gw.proxy(
        "POST",
        "/v1/messages?beta=true",
        body,
        headers={"x-api-key": CALLER_KEY, "anthropic-beta": "claude-code-20250219"},
    )
    assert response.status == 200, response.text
    assert response.json["model"] == CLAUDE
    assert response.json["content"] == [{"type": "text", "text": "echo: hi"}]
    [upstream] = fake_anthropic.requests
    assert upstream.json == {**body, "model": UPSTREAM_CLAUDE}
    assert upstream.headers["x-api-key"] == SECRET
    assert upstream.headers["anthropic-version"] == "2023-06-01"  # the client sent none
    assert upstream.headers["anthropic-beta"] == "claude-code-20250219"


# --- failover across families ------------------------------------------------------------------


def test_failover_from_anthropic_to_openai_family(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream, fake_openai: FakeOpenAIUpstream
) -> None:
    """A routing alias whose Anthropic target fails before any byte: the Messages call, first
    relayed natively, is then translated for the OpenAI target; the chat call, first
    translated, is then relayed natively. Each client gets its own shape."""
    gw.create(
        "models",
        {
            "display_name": "smart",
            "routing": {
                "strategy": "failover",
                "targets": [{"model": CLAUDE, "priority": 0}, {"model": ALIAS, "priority": 1}],
            },
        },
    )
    gw.create_api_key("sk-router", ["smart"])
    router = anthropic.Anthropic(
        base_url=gw.proxy_url, api_key="sk-router", max_retries=0, timeout=15
    )

    def overloaded() -> Reply:
        return Reply.error(529, "Overloaded", "overloaded_error")

    def call() -> anthropic.types.Message:
        return router.messages.create(
            model="smart", max_tokens=16, messages=[{"role": "user", "content": "fail over"}]
        )

    fake_anthropic.script(overloaded())
    message = wait_for(lambda: _or_none(call), 3.0, "the routing alias to be callable")
    assert message.model == "smart"
    assert message.content[0].text == "echo: fail over"
    assert fake_anthropic.requests[-1].json["model"] == UPSTREAM_CLAUDE  # tried natively first
    assert fake_openai.model_requests()[-1].json["messages"] == [
        {"role": "user", "content": "fail over"}
    ]

    fake_anthropic.script(overloaded())
    with router.messages.stream(
        model="smart", max_tokens=16, messages=[{"role": "user", "content": "stream over"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "echo: stream over"
    assert len(fake_anthropic.requests) == 2  # the stream tried the Anthropic target too

    # a 200 stream whose first event is `event: error` (overloaded) fails over too: nothing
    # had reached the client yet
    fake_anthropic.script(Reply(error_after_events=0))
    with router.messages.stream(
        model="smart", max_tokens=16, messages=[{"role": "user", "content": "error first"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "echo: error first"
    assert len(fake_anthropic.requests) == 3

    fake_anthropic.script(overloaded())
    chat = gw.openai_client(api_key="sk-router").chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "chat over"}]
    )
    assert chat.model == "smart" and chat.choices[0].message.content == "echo: chat over"
    assert len(fake_anthropic.requests) == 4
    assert fake_anthropic.requests[-1].json["messages"] == [
        {"role": "user", "content": "chat over"}
    ]  # translated for the Anthropic target before failing over


def _or_none(call: Any) -> Any:
    try:
        return call()
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError):
        return None  # the new key or alias has not propagated yet (contract §11.1: 100 ms)


def test_passthrough_stream_cut_after_its_head_ends_with_an_error_event(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    fake_anthropic.script(Reply(content="a long answer", cut_after_events=4))
    body = {
        "model": CLAUDE,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "cut me"}],
    }
    response = gw.proxy("POST", "/v1/messages", body, api_key=CALLER_KEY)
    assert response.status == 200
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    error = orjson.loads(frames[-1].split("\n")[1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    gw.assert_alive()


# --- the Responses API → Anthropic target ----------------------------------------------------


def test_responses_api_translated_to_anthropic(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream
) -> None:
    fake_anthropic.script(Reply(content="Bonjour.", thinking="French it is.", usage=CACHE_USAGE))
    client = gw.openai_client()
    answer = client.responses.create(
        model=CLAUDE, input="Say hello in French", instructions="Be brief.", max_output_tokens=64
    )
    assert answer.output_text == "Bonjour."
    assert answer.model == CLAUDE and answer.status == "completed"
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (2600, 40)
    [sent] = fake_anthropic.requests
    assert sent.path == "/v1/messages"
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Say hello in French"}]
    assert sent.json["max_tokens"] == 64

    fake_anthropic.script(Reply(content="Streamed reply."))
    with client.responses.stream(model=CLAUDE, input="stream it") as stream:
        list(stream)
        final = stream.get_final_response()
    assert final.output_text == "Streamed reply."
    assert fake_anthropic.requests[-1].json["stream"] is True


# --- Claude Code (the real CLI) → aisix → Anthropic target ---------------------------------------

CLAUDE_BIN = Path(__file__).resolve().parents[1] / "clients" / "node_modules" / ".bin" / "claude"


def test_claude_code_print_mode_through_the_native_path(
    gw: Gateway, fake_anthropic: FakeAnthropicUpstream, tmp_path: Path
) -> None:
    """`claude -p` (pinned from npm by scripts/test.sh), offline, against an Anthropic-adapter
    alias: its Messages calls (system-role messages, beta header, `?beta=true`) are relayed
    natively and it prints the fake upstream's answer."""
    if not CLAUDE_BIN.exists():  # installed by scripts/test.sh; missing is a setup failure
        pytest.fail(f"{CLAUDE_BIN} is missing: run scripts/test.sh (it installs the pinned CLIs)")
    fake_anthropic.default = Reply(content="Hello from the fake Anthropic upstream.")
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": gw.proxy_url,
        "ANTHROPIC_API_KEY": CALLER_KEY,
        "ANTHROPIC_MODEL": CLAUDE,
        "ANTHROPIC_SMALL_FAST_MODEL": CLAUDE,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": CLAUDE,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(CLAUDE_BIN), "-p", "Say hello"],
        env=env,
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello from the fake Anthropic upstream." in done.stdout, done.stdout + done.stderr
    calls = [r for r in fake_anthropic.requests if r.path == "/v1/messages"]
    assert calls, "claude's call never reached the upstream"
    main = calls[-1]
    assert main.json["model"] == UPSTREAM_CLAUDE
    assert main.headers["x-api-key"] == SECRET
    assert CALLER_KEY not in str(main.headers)
    assert main.json["stream"] is True
    # current Claude Code sends a system-role message inside `messages`: relayed as sent
    assert "system" in [m["role"] for m in main.json["messages"]]
    assert "claude-code-20250219" in main.headers["anthropic-beta"]
