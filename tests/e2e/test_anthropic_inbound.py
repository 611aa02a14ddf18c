"""Anthropic Messages inbound end to end (contract §6.9), with the official `anthropic` SDK as
the client and an OpenAI-compatible fake upstream behind the gateway: the request is translated
to chat, the answer and the stream come back in Anthropic form under the alias, errors use the
Anthropic envelope, and limits, usage and metrics work as for chat."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, UPSTREAM_MODEL, Gateway, Seed

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}


def client(gw: Gateway, api_key: str = CALLER_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.proxy_url, api_key=api_key, max_retries=0, timeout=15)


def test_non_streaming_message(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(usage=USAGE))
    raw = client(gw).messages.with_raw_response.create(
        model=ALIAS,
        max_tokens=64,
        system="Be brief.",
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "Hello from Anthropic."}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.model == ALIAS
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: Hello from Anthropic."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 5)
    assert raw.headers.get("x-aisix-request-id")
    assert raw.headers.get("x-aisix-call-id") is None  # chat completions only

    [upstream] = fake_openai.model_requests()
    assert upstream.path == "/v1/chat/completions"
    assert upstream.json["model"] == UPSTREAM_MODEL
    assert upstream.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello from Anthropic."},
    ]
    assert (upstream.json["max_tokens"], upstream.json["stop"]) == (64, ["END"])
    assert "x-api-key" not in upstream.headers and "anthropic-version" not in upstream.headers
    assert gw.metric("aisix_requests_total", endpoint="/v1/messages", status="200") >= 1


def test_streaming_message(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(usage=USAGE))
    with client(gw).messages.stream(
        model=ALIAS, max_tokens=64, messages=[{"role": "user", "content": "Stream it."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: Stream it."
    assert final.model == ALIAS and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    [upstream] = fake_openai.model_requests()
    assert upstream.json["stream"] is True
    assert upstream.json["stream_options"] == {"include_usage": True}


def test_tools_are_translated(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    client(gw).messages.create(  # type: ignore[call-overload]
        model=ALIAS,
        max_tokens=32,
        tools=[{"name": "weather", "description": "Weather by city", "input_schema": schema}],
        tool_choice={"type": "any"},
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "tu1", "name": "weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "Sunny"}],
            },
        ],
    )
    [upstream] = fake_openai.model_requests()
    assert upstream.json["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Weather by city", "parameters": schema},
        }
    ]
    assert upstream.json["tool_choice"] == "required"
    assert upstream.json["messages"][1]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": "{}",
    }
    assert upstream.json["messages"][2] == {
        "role": "tool",
        "tool_call_id": "tu1",
        "content": "Sunny",
    }


def test_errors_use_the_anthropic_envelope(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    with pytest.raises(anthropic.AuthenticationError) as denied:
        client(gw, "sk-wrong").messages.create(
            model=ALIAS, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.status_code == 401
    assert denied.value.body["type"] == "error"  # type: ignore[index]
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

    with pytest.raises(anthropic.NotFoundError):
        client(gw).messages.create(
            model="no-such-alias", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )

    missing = gw.proxy(
        "POST",
        "/v1/messages",
        {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]},
        api_key=CALLER_KEY,
    )
    assert missing.status == 400
    assert missing.json == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": 'request payload is invalid: "max_tokens" is required and must be a '
            "positive integer",
        },
    }
    fake_openai.script(*[Reply.error(503, "overloaded upstream")] * 3)  # outlasts the retries
    with pytest.raises(anthropic.APIStatusError) as failed:
        client(gw).messages.create(
            model=ALIAS, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert failed.value.status_code >= 500
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["message"] == "upstream returned 503"  # type: ignore[index]
    assert len(fake_openai.model_requests()) == 3


def test_a_stream_cut_after_its_head_ends_with_an_error_event(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(cut_after_chunks=2))
    body: dict[str, Any] = {
        "model": ALIAS,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "cut me"}],
    }
    response = gw.proxy("POST", "/v1/messages", body, api_key=CALLER_KEY)
    assert response.status == 200
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert kinds[-1] == "error" and "message_stop" not in kinds
    error = orjson.loads(frames[-1].split("\n")[1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
