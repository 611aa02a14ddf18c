"""The usage ledger survives any row it cannot write (issue 12 item 3), through the pipeline.

A model priced absurdly high makes one clamped answer cost more nano-USD than an SQLite
integer holds; the ledger's writer must deal with that row (drop and count it, or saturate
it) and keep writing the rows of later requests, instead of raising on every flush (admin
usage reads answering 500) and dying (nothing more persisted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aisix.snapshot import Record
from fakes.pipeline_rig import CLAMP, CLAUDE, OPENAI_HOST, Rig, chat, json_reply, openai_chat

pytestmark = pytest.mark.anyio
HUGE = 2**63


async def ledger_rows(rig: Rig) -> list[tuple[Any, ...]]:
    rig.bus.flush()
    return await rig.ledger.query(
        "SELECT api_key_id, requests, prompt_tokens, completion_tokens FROM usage_hourly", ()
    )


def dear_model() -> Record:
    """A model priced so high (the most the admin accepts) that a clamped answer costs more
    nano-USD than an SQLite integer holds (2**40 tokens at $1M per million: ~1.1e21)."""
    value = {
        "display_name": "dear",
        "provider": "openai",
        "model_name": "gpt-4o",
        "provider_key_id": "pk-openai",
        "pricing": {"input_per_million": 1e6, "output_per_million": 1e6},
    }
    return Record("models", "m-dear", value, 1)


async def test_the_ledger_survives_a_row_it_cannot_write(tmp_path: Path) -> None:
    async with Rig(tmp_path, extra=[dear_model()]) as rig:
        rig.upstream.script(OPENAI_HOST, json_reply(openai_chat("hi", HUGE, 1)))
        assert (await rig.post("/v1/chat/completions", chat("dear"), key=CLAMP)).status == 200
        rig.bus.flush()
        await rig.ledger.flush()  # the row cannot be stored as is: it must not raise
        # later requests are still written (on Anthropic: the OpenAI key budget is spent)
        assert (await rig.post("/v1/chat/completions", chat(CLAUDE))).status == 200
        rows = await ledger_rows(rig)
        assert ("k-caller", 1, 5, 2) in rows
