"""Retry and failover through the real pipeline over `MockTransport` (issue 9 item 7).

Each test runs `ProxyApp` in-process (`fakes.pipeline_rig`): a 5xx is retried on the same
target after a backoff, then the alias fails over to the next target, also across wire
families (an OpenAI target that fails → the Anthropic target, translated, and the reverse);
a non-retryable answer does not fail over. Every test also checks that the memory backend
holds nothing afterwards.
"""

from __future__ import annotations

import orjson
import pytest

from aisix.transport.errors import ConnectError
from aisix.transport.mock import MockResponse
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CLAUDE,
    CLAUDE_FIRST,
    GPT,
    GPT_FIRST,
    OPENAI_HOST,
    Rig,
    anthropic_message,
    chat,
    json_reply,
    messages,
    server_error,
)

pytestmark = pytest.mark.anyio


def assert_released(rig: Rig) -> None:
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0), counters


async def test_a_5xx_is_retried_on_the_same_target_after_the_backoff(rig: Rig) -> None:
    # Retry-After (≤ 5 s) replaces the computed backoff: the retry waits at least that long
    busy = {"error": {"message": "busy", "type": "server_error"}}
    rig.upstream.script(OPENAI_HOST, json_reply(busy, 503, headers={"retry-after": "0.3"}))
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 200, answer.body
    assert answer.json()["choices"][0]["message"]["content"] == "hello"
    assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST]
    first, second = rig.upstream.times
    assert second - first >= 0.3
    event = rig.event()
    assert (event.attempts, event.is_fallback, event.status) == (2, False, 200)
    assert [a.status for a in event.attempt_log] == [503, 200]
    assert_released(rig)


async def test_retries_are_bounded_then_the_last_error_is_answered(rig: Rig) -> None:
    # a single-target alias runs on upstream.retries (2): three attempts, then a 502
    rig.upstream.script(OPENAI_HOST, *[server_error(500)] * 3)
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 502, answer.body
    assert answer.json()["error"]["type"] == "upstream_error"
    assert rig.upstream.hosts() == [OPENAI_HOST] * 3
    assert rig.event().attempts == 3
    assert_released(rig)
    counters = rig.counters()
    assert counters.spent == 0 and all(v == 0 for v in counters.tokens.values())


async def test_openai_failure_fails_over_to_anthropic_translated(rig: Rig) -> None:
    # retries: 1 per target, so two OpenAI attempts before the Anthropic one
    rig.upstream.script(OPENAI_HOST, server_error(500), refused)
    rig.upstream.script(ANTHROPIC_HOST, json_reply(anthropic_message("from claude", 11, 3)))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, text="hello there"))
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == GPT_FIRST
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "from claude"}
    assert body["usage"]["prompt_tokens"] == 11 and body["usage"]["completion_tokens"] == 3
    assert answer.headers["x-aisix-served-by"] == CLAUDE
    assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST, ANTHROPIC_HOST]
    sent = rig.upstream.bodies()[-1]  # encoded as a Messages request for the Anthropic target
    assert sent["model"] == "claude-sonnet-4"
    assert sent["messages"] == [{"role": "user", "content": "hello there"}]
    assert isinstance(sent["max_tokens"], int)
    assert rig.upstream.seen[-1].url == f"http://{ANTHROPIC_HOST}/v1/messages"
    event = rig.event()
    assert (event.attempts, event.is_fallback, event.served_model) == (3, True, CLAUDE)
    assert event.provider == "anthropic"
    assert [a.served_model for a in event.attempt_log] == [GPT, GPT, CLAUDE]
    assert_released(rig)


async def test_anthropic_failure_fails_over_to_openai_for_a_messages_client(rig: Rig) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    rig.upstream.script(ANTHROPIC_HOST, json_reply(overloaded, 529), json_reply(overloaded, 529))
    answer = await rig.post("/v1/messages", messages(CLAUDE_FIRST, text="ping"))
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == CLAUDE_FIRST
    assert body["content"] == [{"type": "text", "text": "hello"}]
    assert body["usage"]["input_tokens"] == 5 and body["usage"]["output_tokens"] == 2
    assert answer.headers["x-aisix-served-by"] == GPT
    assert rig.upstream.hosts() == [ANTHROPIC_HOST, ANTHROPIC_HOST, OPENAI_HOST]
    sent = rig.upstream.bodies()[-1]  # a chat completions request for the OpenAI target
    assert sent["model"] == "gpt-4o"
    assert sent["messages"][-1]["role"] == "user"
    assert rig.upstream.seen[-1].url == f"http://{OPENAI_HOST}/v1/chat/completions"
    assert rig.event().is_fallback
    assert_released(rig)


async def test_translated_first_target_fails_over_to_a_passthrough_one(rig: Rig) -> None:
    # a chat client on claude-then-gpt: the Anthropic attempt is translated, the OpenAI one
    # relays the client's body with only `model` rewritten
    rig.upstream.script(ANTHROPIC_HOST, server_error(500), server_error(502))
    request = chat(CLAUDE_FIRST, temperature=0.25, user="u-1")
    answer = await rig.post("/v1/chat/completions", request)
    assert answer.status == 200, answer.body
    assert answer.json()["model"] == CLAUDE_FIRST
    relayed = rig.upstream.bodies()[-1]
    assert relayed == {**request, "model": "gpt-4o"}
    assert_released(rig)


async def test_a_client_error_is_not_retried_nor_failed_over(rig: Rig) -> None:
    bad = {"error": {"message": "bad temperature", "type": "invalid_request_error"}}
    rig.upstream.script(OPENAI_HOST, json_reply(bad, 400))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST))
    assert answer.status == 400, answer.body
    assert answer.json()["error"]["message"] == "bad temperature"
    assert rig.upstream.hosts() == [OPENAI_HOST]
    assert_released(rig)


async def test_every_target_failing_answers_in_the_inbound_envelope(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, *[server_error(500)] * 2)
    rig.upstream.script(ANTHROPIC_HOST, *[server_error(500)] * 2)
    answer = await rig.post("/v1/messages", messages(GPT_FIRST))
    assert answer.status == 502, answer.body
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert rig.upstream.hosts() == [OPENAI_HOST] * 2 + [ANTHROPIC_HOST] * 2
    assert_released(rig)
    assert rig.counters().spent == 0


async def test_a_cooling_target_is_skipped_by_the_next_request(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, server_error(500), server_error(500))
    assert (await rig.post("/v1/chat/completions", chat(GPT_FIRST))).status == 200
    before = len(rig.upstream.seen)
    again = await rig.post("/v1/chat/completions", chat(GPT_FIRST))
    assert again.status == 200
    assert rig.upstream.hosts()[before:] == [ANTHROPIC_HOST]  # the OpenAI target cools down
    assert again.headers["x-aisix-served-by"] == CLAUDE
    assert orjson.loads(again.body)["model"] == GPT_FIRST


def refused() -> MockResponse:
    """A scripted reply that fails the send itself (connection refused)."""
    raise ConnectError("connection refused")
