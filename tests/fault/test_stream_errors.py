"""A stream that fails before its first byte reaches the client answers 502 in the inbound
envelope (issue 12 item 9), never a 500: an upstream that cuts its 200 stream before any
event, and one whose first event is not JSON, on the OpenAI and Anthropic inbound APIs."""

from __future__ import annotations

import orjson
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, Seed, http_request

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

CUTS = {
    "cut before the first event": Reply(cut_after_chunks=0),
    "first event not JSON": Reply(sse_frames=["data: {not json\n\n"]),
}


def _post(gw: Gateway, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    response = http_request(
        "POST",
        gw.proxy_url + path,
        json=body,
        headers={"Authorization": f"Bearer {CALLER_KEY}", "x-api-key": CALLER_KEY},
    )
    return response.status, orjson.loads(response.body) if response.body.startswith(b"{") else {
        "raw": response.text
    }


@pytest.mark.parametrize("case", list(CUTS))
def test_openai_stream_failing_before_its_first_byte_is_502(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream, case: str
) -> None:
    gw, _ = seeded
    fake_openai.default = CUTS[case]
    body = {"model": ALIAS, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    status, answer = _post(gw, "/v1/chat/completions", body)
    assert status == 502, (status, answer)
    assert answer["error"]["type"] == "upstream_error", answer  # type: ignore[index]


@pytest.mark.parametrize("case", list(CUTS))
def test_anthropic_stream_failing_before_its_first_byte_is_502(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream, case: str
) -> None:
    gw, _ = seeded
    fake_openai.default = CUTS[case]
    body = {
        "model": ALIAS,
        "stream": True,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, answer = _post(gw, "/v1/messages", body)
    assert status == 502, (status, answer)
    assert answer["type"] == "error", answer
