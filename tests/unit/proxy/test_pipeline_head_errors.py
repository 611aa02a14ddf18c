"""A head the server refuses to send is an error in the inbound envelope (issue 12 item 2).

uvicorn refuses a response head with a control character in a header value (`RuntimeError`).
Before issue 12 item 7 the admin API accepted a `display_name` with CR/LF, which became the
`x-aisix-served-by` value of a routing alias; the client here refuses that header whatever
its value, standing in for any head the server cannot send. The holds must be released
(they were kept for 300 s before `Reservations`), and since nothing reached the client the
answer must be an error in the route's envelope, not uvicorn's bare text 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from fakes.pipeline_rig import GPT_FIRST, Rig, chat, messages

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_an_unsendable_head_is_an_enveloped_error_and_frees_the_holds(
    rig: Rig, path: str, stream: bool
) -> None:
    make: Any = chat if path == "/v1/chat/completions" else messages
    answer = await rig.post(
        path, make(GPT_FIRST, stream=stream), refuse_header=b"x-aisix-served-by"
    )
    assert answer.status == 500, answer
    body = answer.json()
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    else:
        assert body["error"]["message"] == "internal gateway error"
    assert "x-aisix-served-by" not in answer.headers
    counters = rig.counters()
    assert (counters.slots, counters.reserved) == (0, 0)
    assert rig.event().status == 500
    assert len(rig.upstream.seen) == 1  # the answer was lost, not retried
