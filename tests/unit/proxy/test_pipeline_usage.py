"""Upstream numbers are untrusted (issue 12 item 3), through the real pipeline.

`prompt_tokens: 2**63` (and negative or non-integer counts) from an upstream are clamped at
the codec boundary, on every path (passthrough and translated, stream and not); the
governor settles the clamped amounts and keeps answering, and the usage ledger writes them
to its SQLite file and keeps writing the next requests.
"""

from __future__ import annotations

from typing import Any

import pytest

from aisix.transport.mock import MockResponse
from aisix.wire.types import MAX_TOKENS_REPORTED
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CLAMP,
    CLAUDE,
    GPT,
    OPENAI_HOST,
    Rig,
    anthropic_message,
    anthropic_stream,
    chat,
    json_reply,
    messages,
    openai_chat,
    openai_stream,
    sse_reply,
)

pytestmark = pytest.mark.anyio
HUGE = 2**63


def huge_reply(host: str, stream: bool) -> MockResponse:
    if host == OPENAI_HOST:
        if stream:
            return sse_reply(openai_stream(["hi"], HUGE, -3))
        return json_reply(openai_chat("hi", HUGE, -3))
    if stream:
        return sse_reply(anthropic_stream(["hi"], HUGE, -3))
    return json_reply(anthropic_message("hi", HUGE, -3))


CASES = [
    # (client path, alias, upstream host): passthrough and translated, both families
    ("/v1/chat/completions", GPT, OPENAI_HOST),
    ("/v1/messages", CLAUDE, ANTHROPIC_HOST),
    ("/v1/chat/completions", CLAUDE, ANTHROPIC_HOST),
    ("/v1/messages", GPT, OPENAI_HOST),
]


def body_for(path: str, alias: str, stream: bool) -> dict[str, Any]:
    return chat(alias, stream) if path == "/v1/chat/completions" else messages(alias, stream)


async def ledger_rows(rig: Rig) -> list[tuple[Any, ...]]:
    rig.bus.flush()  # deliver the finished requests' events to the ledger
    return await rig.ledger.query(
        "SELECT api_key_id, requests, prompt_tokens, completion_tokens FROM usage_hourly "
        "ORDER BY api_key_id",
        (),
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "alias", "host"), CASES)
async def test_huge_and_negative_token_counts_are_clamped(
    rig: Rig, path: str, alias: str, host: str, stream: bool
) -> None:
    rig.upstream.script(host, huge_reply(host, stream))
    answer = await rig.post(path, body_for(path, alias, stream), key=CLAMP)
    assert answer.status == 200, answer.body
    usage = rig.event().usage
    assert usage is not None and not usage.estimated
    assert usage.prompt_tokens == MAX_TOKENS_REPORTED
    # -3 is no token count (an Anthropic stream may keep message_start's output_tokens: 1)
    assert usage.completion_tokens in ((0, 1) if stream and host == ANTHROPIC_HOST else (0,))
    assert MAX_TOKENS_REPORTED <= usage.total_tokens <= MAX_TOKENS_REPORTED + 1
    # the governor settled the clamped cost and still answers: the budget is now spent
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)
    assert counters.spent > 0
    refused = await rig.post(path, body_for(path, alias, stream), key=CLAMP)
    assert refused.status == 429, refused.body
    assert rig.event().outcome == "budget_exceeded"
    # the ledger wrote the clamped row, and writes the next request too
    # (the refused call is not a row: the ledger counts admitted requests)
    [(key_id, requests, prompt, _)] = await ledger_rows(rig)
    assert (key_id, requests) == ("k-clamp", 1)
    assert 10**12 <= prompt <= MAX_TOKENS_REPORTED  # as clamped (or saturated by the ledger)
    # (on the Anthropic target: the OpenAI provider key's own budget may be spent now)
    assert (await rig.post(path, body_for(path, CLAUDE, False))).status == 200
    rows = await ledger_rows(rig)
    assert rows[0][0] == "k-caller" and rows[0][1] == 1


async def test_non_integer_counts_fall_back_to_the_estimate(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, json_reply(openai_chat("hello", "many", 2.5)))
    answer = await rig.post("/v1/chat/completions", chat(GPT))
    assert answer.status == 200
    usage = rig.event().usage
    assert usage is not None and usage.estimated  # no usable usage: estimated, not trusted
    assert usage.completion_tokens == 2  # "hello" is 5 bytes, ~4 bytes a token
    assert 0 < usage.prompt_tokens < 100
