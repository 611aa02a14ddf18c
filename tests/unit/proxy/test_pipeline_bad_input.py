"""Bad fields on translated paths are a 400 in the inbound envelope, never a 500.

Found by probing the in-process pipeline with odd values in every field: a number as `stop`
or `tools` on a chat call translated for an Anthropic target, or as `tools` on a Responses
call (always translated here), crashed the canonical translation (`TypeError`, answered
500 "internal gateway error"). Same-family calls relay the body and leave such checks to the
upstream; the translated ones must name the field. No hold may be left behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from fakes.pipeline_rig import CLAUDE, GPT, GPT_FIRST, Rig, chat

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", chat(CLAUDE, stop=1), "stop"),
        ("/v1/chat/completions", chat(CLAUDE, stop=True), "stop"),
        ("/v1/chat/completions", chat(CLAUDE, stop={"a": 1}), "stop"),
        ("/v1/chat/completions", chat(CLAUDE, tools=5), "tools"),
        ("/v1/chat/completions", chat(CLAUDE, tools="search"), "tools"),
        ("/v1/responses", {"model": CLAUDE, "input": "hi", "tools": 1.5}, "tools"),
        ("/v1/responses", {"model": GPT, "input": "hi", "tools": {"x": 1}}, "tools"),
    ],
)
async def test_a_bad_field_on_a_translated_call_is_a_400(
    rig: Rig, path: str, body: dict[str, Any], param: str, stream: bool
) -> None:
    answer = await rig.post(path, {**body, "stream": stream})
    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and f'"{param}"' in error["message"]
    assert rig.upstream.seen == []
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)


async def test_good_stop_and_tools_still_translate(rig: Rig) -> None:
    tool = {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
    answer = await rig.post("/v1/chat/completions", chat(CLAUDE, stop="END", tools=[tool]))
    assert answer.status == 200, answer.body
    sent = rig.upstream.bodies()[-1]
    assert sent["stop_sequences"] == ["END"]
    assert [t["name"] for t in sent["tools"]] == ["look"]


async def test_a_same_family_call_relays_the_field_as_sent(rig: Rig) -> None:
    # passthrough: the upstream judges its own fields (here the mock accepts anything)
    answer = await rig.post("/v1/chat/completions", chat(GPT, stop=1))
    assert answer.status == 200
    assert rig.upstream.bodies()[-1]["stop"] == 1


async def test_a_routing_alias_answers_400_when_the_translated_target_is_reached(
    rig: Rig,
) -> None:
    from fakes.pipeline_rig import OPENAI_HOST, server_error

    rig.upstream.script(OPENAI_HOST, server_error(500), server_error(500))
    answer = await rig.post("/v1/chat/completions", chat(GPT_FIRST, tools=5))
    assert answer.status == 400, answer.body
    assert answer.json()["error"]["param"] == "tools"
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)
