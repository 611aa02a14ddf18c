"""The Responses API through the real pipeline over `MockTransport` (issue 9 item 7).

Neither rig target serves `/v1/responses` natively (the OpenAI key points at a compatible
endpoint, the other is Anthropic), so every call is translated: to chat completions or to
Messages, with failover between them; the answer is a `response` object (or the documented
event stream), stored for `GET /v1/responses/{id}` and continued by `previous_response_id`
on whichever target serves the next turn.
"""

from __future__ import annotations

import pytest

from aisix.transport.errors import ConnectionClosed
from fakes.pipeline_rig import (
    ANTHROPIC_HOST,
    CLAUDE,
    GPT,
    GPT_FIRST,
    OPENAI_HOST,
    Rig,
    anthropic_stream,
    server_error,
    sse_reply,
)

pytestmark = pytest.mark.anyio


def output_text(response: dict[str, object]) -> str:
    output = response["output"]
    assert isinstance(output, list)
    return "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def test_a_response_fails_over_translated_and_is_stored(rig: Rig) -> None:
    rig.upstream.script(OPENAI_HOST, server_error(500), server_error(500))
    answer = await rig.post("/v1/responses", {"model": GPT_FIRST, "input": "hi there"})
    assert answer.status == 200, answer.body
    response = answer.json()
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["model"] == GPT_FIRST
    assert output_text(response) == "hello"
    assert response["usage"]["input_tokens"] == 5 and response["usage"]["output_tokens"] == 2
    assert rig.upstream.hosts() == [OPENAI_HOST, OPENAI_HOST, ANTHROPIC_HOST]
    sent = rig.upstream.bodies()[-1]  # a Messages request
    assert sent["messages"] == [{"role": "user", "content": "hi there"}]
    stored = await rig.get(f"/v1/responses/{response['id']}")
    assert stored.status == 200 and stored.json() == response
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_previous_response_id_continues_on_another_family(rig: Rig) -> None:
    first = await rig.post("/v1/responses", {"model": CLAUDE, "input": "one"})
    assert first.status == 200
    previous = first.json()["id"]
    follow = {"model": GPT, "input": "two", "previous_response_id": previous}
    second = await rig.post("/v1/responses", follow)
    assert second.status == 200, second.body
    assert second.json()["previous_response_id"] == previous
    sent = rig.upstream.bodies()[-1]  # the chat request carries the stored conversation
    assert rig.upstream.hosts()[-1] == OPENAI_HOST
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("user", "one"),
        ("assistant", "hello"),
        ("user", "two"),
    ]


async def test_another_key_cannot_continue_or_read_a_stored_response(rig: Rig) -> None:
    from fakes.pipeline_rig import CLAMP

    first = await rig.post("/v1/responses", {"model": CLAUDE, "input": "mine"})
    rid = first.json()["id"]
    assert (await rig.get(f"/v1/responses/{rid}", key=CLAMP)).status == 404
    continued = await rig.post(
        "/v1/responses", {"model": CLAUDE, "input": "x", "previous_response_id": rid}, key=CLAMP
    )
    assert continued.status == 400, continued.body  # unknown on a translated path


async def test_a_streamed_response_is_the_event_sequence_and_is_stored(rig: Rig) -> None:
    answer = await rig.post("/v1/responses", {"model": CLAUDE, "input": "hi", "stream": True})
    assert answer.status == 200
    events = answer.events()
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "hello"
    done = events[-1]["response"]
    assert output_text(done) == "hello"
    stored = await rig.get(f"/v1/responses/{done['id']}")
    assert stored.status == 200 and output_text(stored.json()) == "hello"


async def test_a_stream_cut_after_the_head_fails_the_response_unstored(rig: Rig) -> None:
    head = anthropic_stream(["hel", "lo"])[:3]
    rig.upstream.script(ANTHROPIC_HOST, sse_reply(head, error=ConnectionClosed("reset")))
    answer = await rig.post("/v1/responses", {"model": CLAUDE, "input": "hi", "stream": True})
    assert answer.status == 200
    events = answer.events()
    kinds = [event["type"] for event in events]
    assert kinds[-2:] == ["error", "response.failed"]
    rid = events[0]["response"]["id"]
    assert (await rig.get(f"/v1/responses/{rid}")).status == 404
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_store_false_keeps_nothing(rig: Rig) -> None:
    answer = await rig.post("/v1/responses", {"model": GPT, "input": "hi", "store": False})
    assert answer.status == 200
    rid = answer.json()["id"]
    assert (await rig.get(f"/v1/responses/{rid}")).status == 404
    deleted = await rig.client.request("DELETE", f"/v1/responses/{rid}")
    assert deleted.status == 404
