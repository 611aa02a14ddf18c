"""Streams through the real pipeline over `MockTransport` (issue 9 item 7).

A stream fails over while nothing has reached the client (an error status, a connection cut
before the first event, an Anthropic `error` event first); once the 200 head is out the
attempt is final, and a later failure is the stream's last event (no second upstream call,
no terminal marker). Every test checks the memory backend holds nothing afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aisix.transport.errors import ConnectionClosed
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CLAUDE,
    CLAUDE_FIRST,
    GPT,
    GPT_FIRST,
    OPENAI_HOST,
    Reply,
    Rig,
    anthropic_stream,
    chat,
    messages,
    openai_stream,
    server_error,
    sse_event,
    sse_reply,
)

pytestmark = pytest.mark.anyio


def assert_released(rig: Rig) -> None:
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0), counters


def text_of_chat_stream(answer: Reply) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in answer.events()
        for choice in event.get("choices", [])
    )


async def test_stream_error_status_fails_over_before_the_head(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, server_error(500), server_error(503))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["x-aisix-served-by"] == CLAUDE
    assert text_of_chat_stream(answer) == "hello"  # Anthropic events translated to chunks
    assert answer.body.endswith(b"data: [DONE]\n\n")
    assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST, ANTHROPIC_HOST]
    assert rig.event().is_fallback
    assert_released(rig)


async def test_a_stream_cut_before_its_first_event_fails_over(rig: Rig) -> None:
    cut = sse_reply([], error=ConnectionClosed("reset"))  # 200 head, then the socket drops
    rig.upstream.script(OPENAI_HOST, cut, cut)
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
    assert answer.status == 200
    assert text_of_chat_stream(answer) == "hello"
    assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST, ANTHROPIC_HOST]
    assert all(r.closed for r in rig.mock.responses)  # every upstream response was closed
    assert_released(rig)


async def test_an_anthropic_error_event_first_fails_over_to_openai(rig: Rig) -> None:
    overloaded = sse_event("error", {"error": {"type": "overloaded_error", "message": "busy"}})
    rig.upstream.script(ANTHROPIC_HOST, sse_reply([overloaded]), sse_reply([overloaded]))
    answer = await rig.post("/v1/messages", messages(CLAUDE_FIRST, stream=True))
    assert answer.status == 200, answer.body
    kinds = [event["type"] for event in answer.events()]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "error" not in kinds
    text = "".join(
        e["delta"]["text"] for e in answer.events() if e["type"] == "content_block_delta"
    )
    assert text == "hello"  # OpenAI chunks translated to Anthropic events
    assert rig.upstream.hosts() == [ANTHROPIC_HOST, ANTHROPIC_HOST, OPENAI_HOST]
    assert_released(rig)


async def test_no_failover_after_the_head_the_error_is_the_last_event(rig: Rig) -> None:
    first_chunks = openai_stream(["hel", "lo"])[:2]  # role chunk, "hel"
    rig.upstream.script(OPENAI_HOST, sse_reply(first_chunks, error=ConnectionClosed("reset")))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
    assert answer.status == 200
    assert answer.complete  # the response was ended, by the error event
    assert rig.upstream.hosts() == [OPENAI_HOST]  # no second call once bytes were sent
    assert text_of_chat_stream(answer) == "hel"
    last = answer.events()[-1]
    assert last["error"]["type"] == "upstream_error"
    assert b"[DONE]" not in answer.body
    event = rig.event()
    assert event.status == 200 and event.outcome == "upstream_error"
    assert event.error_type == "upstream_error"
    assert_released(rig)
    # what was delivered is settled (estimated: the upstream never reported usage)
    assert event.usage is not None and event.usage.estimated
    assert rig.counters().spent > 0


async def test_no_failover_after_the_head_on_the_anthropic_wire(rig: Rig) -> None:
    head = anthropic_stream(["hel", "lo"])[:3]  # message_start, block start, "hel"
    rig.upstream.script(ANTHROPIC_HOST, sse_reply(head, error=ConnectionClosed("reset")))
    answer = await rig.post("/v1/messages", messages(CLAUDE_FIRST, stream=True))
    assert answer.status == 200
    assert rig.upstream.hosts() == [ANTHROPIC_HOST]
    kinds = [event["type"] for event in answer.events()]
    assert kinds[-1] == "error" and "message_stop" not in kinds
    assert_released(rig)


async def test_a_stream_timeout_before_the_head_fails_over(tmp_path: Path) -> None:
    async with Rig(tmp_path, settings={"upstream": {"stream_timeout_ms": 200}}) as rig:
        stalled = sse_reply(openai_stream(["late"]), delay=1.0)  # head after 1 s > 200 ms
        rig.upstream.script(OPENAI_HOST, stalled, stalled)
        answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
        assert answer.status == 200
        assert text_of_chat_stream(answer) == "hello"
        assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST, ANTHROPIC_HOST]
        assert [a.error_type for a in rig.event().attempt_log] == ["timeout", "timeout", None]
        assert_released(rig)


async def test_a_stream_timeout_after_the_head_is_the_last_event(tmp_path: Path) -> None:
    async with Rig(tmp_path, settings={"upstream": {"stream_timeout_ms": 200}}) as rig:
        # the role chunk comes at once (the head goes out), the next one after 1 s > 200 ms
        rig.upstream.script(OPENAI_HOST, sse_reply(openai_stream(["late"]), chunk_delay=1.0))
        answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, stream=True))
        assert answer.status == 200
        assert rig.upstream.hosts() == [OPENAI_HOST]
        assert answer.events()[-1]["error"]["type"] == "timeout"
        assert rig.event().error_type == "timeout"
        assert_released(rig)


async def test_stream_success_direct_alias(rig: Rig) -> None:
    answer = await rig.post("/v1/chat/completions", chat(GPT, stream=True))
    assert answer.status == 200
    assert text_of_chat_stream(answer) == "hello"
    assert "x-aisix-served-by" not in answer.headers
    assert all(r.released or r.closed for r in rig.mock.responses)
    assert_released(rig)
