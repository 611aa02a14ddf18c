"""A head the server refuses to send is an error in the inbound envelope (issue 12 item 2).

The admin API still accepts a `display_name` with CR/LF; on a routing alias it becomes the
`x-aisix-served-by` value, which uvicorn refuses to send (`RuntimeError`). The holds must be
released (they were kept for 300 s before `Reservations`) and, since nothing reached the
client, the answer must be an error in the route's envelope, not uvicorn's bare text 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aisix.snapshot import Record
from fakes.pipeline_rig import Rig, chat, messages

pytestmark = pytest.mark.anyio
EVIL = "evil\r\nx-injected: 1"


def evil_records() -> list[Record]:
    direct = {
        "display_name": EVIL,
        "provider": "openai",
        "model_name": "gpt-4o",
        "provider_key_id": "pk-openai",
    }
    routing = {"display_name": "evil-route", "routing": {"targets": [{"model": EVIL}]}}
    return [Record("models", "m-evil", direct, 1), Record("models", "m-evil-route", routing, 1)]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_an_unsendable_head_is_an_enveloped_error_and_frees_the_holds(
    tmp_path: Path, path: str, stream: bool
) -> None:
    async with Rig(tmp_path, extra=evil_records()) as rig:
        make: Any = chat if path == "/v1/chat/completions" else messages
        answer = await rig.post(path, make("evil-route", stream=stream))
        assert answer.status == 500, answer
        body = answer.json()
        if path == "/v1/messages":
            assert body["type"] == "error" and body["error"]["type"] == "api_error"
        else:
            assert body["error"]["message"] == "internal gateway error"
        assert "x-injected" not in answer.headers
        counters = rig.counters()
        assert (counters.slots, counters.reserved) == (0, 0)
        assert rig.event().status == 500
