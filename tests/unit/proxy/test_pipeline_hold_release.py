"""Every hold settled, failed or rolled back exactly once (issue 9 item 6, issue 12 items 2, 4).

Through the real pipeline over `MockTransport`, read from the memory backend's own
counters: after each request no concurrency slot and no budget reservation is left; a
success settles its spend and tokens once per bucket (so twice settled would show as double
spend, twice released as a negative reservation); a failure gives everything back; a client
that hangs up (mid-stream, before the head, on a non-stream call, during a retry's backoff)
is noticed and its holds finished, the upstream call cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aisix.limits.base import NANO_PER_USD
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CALLER,
    CLAUDE,
    GPT,
    GPT_FIRST,
    OPENAI_HOST,
    Rig,
    anthropic_stream,
    chat,
    json_reply,
    messages,
    openai_chat,
    openai_stream,
    server_error,
    sse_reply,
)

pytestmark = pytest.mark.anyio


def assert_released(rig: Rig) -> None:
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0), counters


def assert_settled_once(rig: Rig, budgets: int) -> None:
    """The last request's cost was added once to each of its `budgets` spend buckets, and its
    tokens once to the caller key's token window."""
    event = rig.event()
    assert event.usage is not None and event.cost_usd > 0
    counters = rig.counters()
    assert counters.spent == budgets * round(event.cost_usd * NANO_PER_USD)
    assert list(counters.tokens.values()) == [event.usage.total_tokens]


@pytest.mark.parametrize("stream", [False, True])
async def test_success_settles_every_hold_once(rig: Rig, stream: bool) -> None:
    answer = await rig.post("/v1/chat/completions", chat(GPT, stream=stream))
    assert answer.status == 200
    # the x-ratelimit-* headers of the strictest token bucket (the caller key's tpm)
    assert answer.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) < 1_000_000
    assert_released(rig)
    # the caller key's budget (gate) and the provider key's budget policy (attempt)
    assert_settled_once(rig, budgets=2)
    assert rig.event().usage.total_tokens == 7  # type: ignore[union-attr]


async def test_an_upstream_error_gives_every_reservation_back(rig: Rig) -> None:
    bad = {"error": {"message": "no such parameter", "type": "invalid_request_error"}}
    rig.upstream.script(OPENAI_HOST, json_reply(bad, 400))
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 400
    assert_released(rig)
    counters = rig.counters()
    assert counters.spent == 0
    assert list(counters.tokens.values()) == [0]  # the token reservation was given back


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "x", "choices": [{"message": {"content": "x", "tool_calls": 5}}]},
        {"choices": [{"message": {"content": "x"}, "finish_reason": [1]}]},
        {"choices": "none"},
    ],
)
async def test_a_malformed_200_is_a_502_and_releases_its_holds(rig: Rig, bad: Any) -> None:
    # a translated answer (Messages client, OpenAI target) fails to render: issue 12 item 2
    rig.upstream.script(OPENAI_HOST, *[json_reply(bad)] * 3)  # retried twice, as a 5xx
    answer = await rig.post("/v1/messages", messages(GPT))
    assert answer.status == 502, answer.body
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert len(rig.upstream.seen) == 3
    assert_released(rig)
    assert rig.counters().spent == 0
    # and the slot really is free: the next call succeeds
    assert (await rig.post("/v1/messages", messages(GPT))).status == 200


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]"])
async def test_a_body_that_is_no_json_object_is_a_502(rig: Rig, raw: bytes) -> None:
    from aisix.transport.mock import MockResponse

    rig.upstream.script(OPENAI_HOST, *[MockResponse(200, {}, raw)] * 3)
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 502
    assert answer.json()["error"]["type"] == "upstream_error"
    assert_released(rig)


async def test_a_bug_answers_500_and_releases_its_holds(rig: Rig) -> None:
    def broken() -> Any:
        raise RuntimeError("a bug below the pipeline")

    rig.upstream.script(OPENAI_HOST, broken)
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 500
    assert answer.json()["error"]["message"] == "internal gateway error"
    assert_released(rig)
    assert rig.counters().spent == 0


@pytest.mark.parametrize(
    ("path", "alias", "host", "budgets"),
    [
        ("/v1/chat/completions", GPT, OPENAI_HOST, 2),  # relayed
        ("/v1/chat/completions", CLAUDE, ANTHROPIC_HOST, 1),  # translated
        ("/v1/messages", CLAUDE, ANTHROPIC_HOST, 1),  # relayed
    ],
)
async def test_a_client_hanging_up_mid_stream_settles_what_was_delivered(
    rig: Rig, path: str, alias: str, host: str, budgets: int
) -> None:
    pieces = ["one ", "two ", "three ", "four ", "five"]
    chunks = openai_stream(pieces) if host == OPENAI_HOST else anthropic_stream(pieces)
    rig.upstream.script(host, sse_reply(chunks, chunk_delay=0.2))
    body = chat(alias, stream=True) if path == "/v1/chat/completions" else messages(alias, True)
    # the first messages reach the client, then it leaves
    answer = await rig.post(path, body, hang_up_after=2)
    assert answer.status == 200
    assert not answer.complete
    assert rig.mock.responses[0].closed  # the upstream stream was abandoned, not drained
    assert len(rig.upstream.seen) == 1
    event = rig.event()
    assert event.client_cancelled and event.status == 200
    assert event.usage is not None and event.usage.total_tokens > 0
    assert_released(rig)
    assert_settled_once(rig, budgets=budgets)


async def hang_up_once_upstream_called(
    rig: Rig, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> Any:
    gone = asyncio.Event()
    call = asyncio.create_task(rig.post(path, body, hang_up=gone))  # type: ignore[arg-type,var-annotated]
    await rig.upstream.wait_requests(1)
    gone.set()
    async with asyncio.timeout(5):  # the upstream would answer only after 30 s
        return await call


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_hanging_up_before_the_head_fails_every_hold(rig: Rig, stream: bool) -> None:
    # streams are watched from the start, non-stream calls once they ran 0.5 s (issue 12
    # item 4): either way the hang-up cancels the upstream call long before it answers
    rig.upstream.script(OPENAI_HOST, json_reply(openai_chat(), delay=30.0))
    answer = await hang_up_once_upstream_called(
        rig, chat(GPT, stream=stream), "/v1/chat/completions"
    )
    assert answer.status == 0  # nothing was sent
    assert rig.mock.responses == []  # the upstream send itself was cancelled
    event = rig.event()
    assert event.client_cancelled and event.status == 499
    assert_released(rig)
    counters = rig.counters()
    assert counters.spent == 0 and list(counters.tokens.values()) == [0]
    # the slot is free again: a new call is served
    assert (await rig.post("/v1/chat/completions", chat(GPT))).status == 200


@pytest.mark.parametrize("stream", [True, False])
async def test_a_hang_up_during_a_retry_backoff_cancels_the_retry(rig: Rig, stream: bool) -> None:
    # Retry-After: 5 makes the backoff 5 s; the client leaves during it
    busy = json_reply({"error": {"message": "busy"}}, 503, headers={"retry-after": "5"})
    rig.upstream.script(OPENAI_HOST, busy)
    answer = await hang_up_once_upstream_called(
        rig, chat(GPT, stream=stream), "/v1/chat/completions"
    )
    assert answer.status == 0
    await asyncio.sleep(0)
    assert len(rig.upstream.seen) == 1  # the retry never ran
    assert rig.event().status == 499
    assert_released(rig)
    assert rig.counters().spent == 0


async def test_concurrency_slots_are_held_while_calls_run(rig: Rig) -> None:
    # the caller key allows 4 concurrent calls
    slow = [json_reply(openai_chat(), delay=0.5) for _ in range(4)]
    rig.upstream.script(OPENAI_HOST, *slow)
    calls = [asyncio.create_task(rig.post("/v1/chat/completions", chat(GPT))) for _ in slow]  # type: ignore[arg-type,var-annotated]
    await rig.upstream.wait_requests(4)
    # 4 gate slots (key) and 4 attempt slots (model)
    assert rig.counters().slots == 8
    refused = await rig.post("/v1/chat/completions", chat(GPT), key=CALLER)
    assert refused.status == 429, refused.body
    assert [(await c).status for c in calls] == [200] * 4
    assert_released(rig)


async def test_a_stream_error_before_the_head_rolls_back_nothing_spent(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, *[server_error(500)] * 3)
    answer = await rig.post("/v1/chat/completions", chat(GPT, stream=True))
    assert answer.status == 502  # an ordinary error answer: no head was sent
    assert answer.json()["error"]["type"] == "upstream_error"
    assert_released(rig)
    assert rig.counters().spent == 0


async def test_routing_alias_holds_are_released_across_failover(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, server_error(500), server_error(500))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
    assert answer.status == 200
    assert_released(rig)
    # the failed OpenAI attempts spent nothing; the Anthropic one settles the key budget only
    assert_settled_once(rig, budgets=1)
