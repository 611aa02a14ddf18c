"""The fake Anthropic upstream speaks the real protocol: the official `anthropic` SDK, pointed
straight at it (no gateway), creates messages, streams them (text, thinking, tool use),
counts tokens, and raises its own typed errors for the fake's error envelopes and for an
`event: error` mid-stream."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from fakes.anthropic_upstream import FakeAnthropicUpstream, Reply, credential, estimate

KEY = "sk-ant-fake-key"


@pytest.fixture
def fake() -> Iterator[FakeAnthropicUpstream]:
    upstream = FakeAnthropicUpstream(api_key=KEY).start()
    try:
        yield upstream
    finally:
        upstream.stop()


def sdk(fake: FakeAnthropicUpstream, api_key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key=api_key, max_retries=0, timeout=10)


def test_create_echoes_and_reports_usage(fake: FakeAnthropicUpstream) -> None:
    fake.script(Reply(usage={"cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}))
    raw = sdk(fake).messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=32,
        system="terse",
        messages=[{"role": "user", "content": "hello fake"}],
    )
    message = raw.parse()
    assert message.model == "claude-sonnet-4-5"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "echo: hello fake"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == estimate("tersehello fake")
    assert message.usage.output_tokens == estimate("echo: hello fake")
    assert message.usage.cache_read_input_tokens == 7
    assert message.usage.cache_creation_input_tokens == 3
    assert raw.request_id and raw.request_id.startswith("req_fake_")
    [seen] = fake.requests
    assert seen.path == "/v1/messages"
    assert credential(seen.headers) == KEY
    assert seen.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert seen.json["system"] == "terse"


def test_stream_text_thinking_and_tool_use(fake: FakeAnthropicUpstream) -> None:
    tool = {"id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "days": 2}}
    fake.script(Reply(content="Let me check.", thinking="user wants weather", tool_uses=[tool]))
    with sdk(fake).messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, call = final.content
    assert thinking.thinking == "user wants weather"  # type: ignore[union-attr]
    assert thinking.signature == "sig-fake-0001"  # type: ignore[union-attr]
    assert text.text == "Let me check."  # type: ignore[union-attr]
    assert (call.id, call.name, call.input) == ("toolu_01", "get_weather", tool["input"])  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == estimate("Let me check.")
    assert fake.requests[0].json["stream"] is True
    assert fake.requests[0].json["thinking"]["budget_tokens"] == 1024


def test_count_tokens(fake: FakeAnthropicUpstream) -> None:
    client = sdk(fake)
    short = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
    )
    assert short.input_tokens == estimate("hi")
    fake.script(Reply(input_tokens=4242))
    assert (
        client.messages.count_tokens(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        ).input_tokens
        == 4242
    )
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"] * 2


def test_errors_are_the_sdk_typed_errors(fake: FakeAnthropicUpstream) -> None:
    messages = [{"role": "user", "content": "x"}]
    fake.script(Reply.error(429, "slow down", "rate_limit_error", retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk(fake).messages.create(model="m", max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    fake.script(Reply.error(529, "Overloaded", "overloaded_error"))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        sdk(fake).messages.create(model="m", max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.AuthenticationError):
        sdk(fake, api_key="wrong").messages.create(model="m", max_tokens=8, messages=messages)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError):  # max_tokens missing, checked by the fake
        sdk(fake).post("/v1/messages", body={"model": "m", "messages": messages}, cast_to=object)


def test_error_event_mid_stream_raises_in_the_sdk(fake: FakeAnthropicUpstream) -> None:
    fake.script(Reply(error_after_events=3))
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        sdk(fake).messages.stream(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "long"}]
        ) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start"
    assert "Overloaded" in str(failed.value)


def test_beta_header_and_redacted_thinking_reach_the_fake(fake: FakeAnthropicUpstream) -> None:
    fake.script(Reply(redacted_thinking="opaque-blob", content="ok"))
    message = sdk(fake).messages.create(
        model="m",
        max_tokens=8,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert [b.type for b in message.content] == ["redacted_thinking", "text"]
    assert message.content[0].data == "opaque-blob"  # type: ignore[union-attr]
    assert fake.requests[0].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


def test_cut_stream_and_delays(fake: FakeAnthropicUpstream) -> None:
    fake.script(Reply(cut_after_events=3))
    seen: list[str] = []
    with (
        pytest.raises((anthropic.APIConnectionError, *httpx_errors())),
        sdk(fake).messages.stream(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "cut"}]
        ) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert seen[:1] == ["message_start"] and "message_stop" not in seen
    fake.script(Reply(delay_s=0.3))
    with pytest.raises(anthropic.APITimeoutError):
        anthropic.Anthropic(
            base_url=fake.url, api_key=KEY, max_retries=0, timeout=0.1
        ).messages.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "slow"}])
    fake.script(Reply(drop_connection=True))
    with pytest.raises(anthropic.APIConnectionError):
        sdk(fake).messages.create(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )


def httpx_errors() -> tuple[type[BaseException], ...]:
    """What the SDK's HTTP client raises for a body cut short (it is not always wrapped)."""
    import importlib

    out: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        out.extend(
            getattr(module, n) for n in ("RemoteProtocolError", "ReadError") if hasattr(module, n)
        )
    return tuple(out)
