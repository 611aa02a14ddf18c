"""The usage ledger on a real SQLite file (issue 12 items 3 and 8).

An upstream that reports `prompt_tokens: 2**63` used to kill the ledger's writer task
(OverflowError is not a sqlite3.Error): admin usage reads then answered 500 and nothing more
was persisted. Numbers a row cannot hold now saturate (tokens at 10^12, cost at 2^53 nano-USD
per request), every row is written and the writer goes on. Spend is flushed every 100 ms.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from aisix.events import RequestFinished, Usage
from aisix.usage import UsageStore
from aisix.usage.rows import MAX_ROW_NANO_USD, MAX_ROW_TOKENS

pytestmark = pytest.mark.anyio
HOUR_TS = 1_767_225_600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(key: str, usage: Usage | None, cost: float = 0.001, **extra: Any) -> RequestFinished:
    return RequestFinished(
        event_id="e",
        request_id="r",
        ts=HOUR_TS,
        endpoint="/v1/chat/completions",
        method="POST",
        path="/v1/chat/completions",
        stream=False,
        status=200,
        outcome="success",
        latency_ms=1.0,
        client_ip=None,
        api_key_id=key,
        model_id="m1",
        attempts=1,
        usage=usage,
        cost_usd=cost,
        **extra,
    )


def rows(path: Path) -> dict[str, tuple[int, int, int]]:
    with sqlite3.connect(path) as db:
        found = db.execute(
            "SELECT api_key_id, requests, prompt_tokens, cost_nano_usd FROM usage_hourly"
        ).fetchall()
    return {key: (requests, prompt, cost) for key, requests, prompt, cost in found}


async def test_absurd_numbers_saturate_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db", flush_interval_s=0.01)
    await store.start()
    try:
        store.on_event(event("good", Usage(1, 2, 0, 3)))
        store.on_event(event("huge", Usage(2**63, 1, 0, 2**63)))
        store.on_event(event("negative", Usage(-5, 1, 0, -4)))
        store.on_event(event("nan", Usage(1, 1, 0, 2), cost=float("nan")))
        store.on_event(event("inf", Usage(1, 1, 0, 2), cost=float("inf")))
        await _wait(lambda: len(rows(tmp_path / "usage.db")) == 5)
        written = rows(tmp_path / "usage.db")
        assert written["good"] == (1, 1, 1_000_000)
        assert written["huge"][1] == MAX_ROW_TOKENS  # saturated, not an overflow
        assert written["negative"][1] == 0 or written["negative"][1] == -5
        assert written["nan"][2] == 0 and written["inf"][2] == MAX_ROW_NANO_USD
        # the writer is still alive: later rows are written, and reads work
        store.on_event(event("later", Usage(1, 1, 0, 2)))
        await _wait(lambda: "later" in rows(tmp_path / "usage.db"))
        result = await store.query("SELECT COUNT(*) FROM usage_hourly", ())
        assert result == [(6,)]
        assert store._task is not None and not store._task.done()
    finally:
        await store.close()


async def test_spend_sums_saturate_instead_of_overflowing(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db", flush_interval_s=0.01)
    await store.start()
    for _ in range(3):
        store.add_spend("aisix:rl:{budget:key:k}:spend.total", 0, 2**62)
        await store.flush()
    assert store._task is not None and not store._task.done()
    await store.close()
    again = UsageStore(tmp_path / "usage.db")
    await again.start()
    try:
        assert again.load_spend() == {("aisix:rl:{budget:key:k}:spend.total", 0): 2**62}
    finally:
        await again.close()


async def test_spend_is_written_within_the_flush_interval(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db", flush_interval_s=0.05)
    await store.start()
    try:
        store.add_spend("k", 0, 123)

        def persisted() -> bool:
            with sqlite3.connect(tmp_path / "usage.db") as db:
                return db.execute("SELECT nano_usd FROM spend").fetchall() == [(123,)]

        await _wait(persisted, timeout=2.0)
    finally:
        await store.close()


async def _wait(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_close_waits_for_a_batch_still_writing_in_its_thread(tmp_path: Path) -> None:
    """A cancelled writer task leaves its thread running; closing the connection under it
    crashed the gateway at shutdown (exit -11)."""
    store = UsageStore(tmp_path / "usage.db", flush_interval_s=0.001)
    await store.start()
    entered, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    original = store._apply

    def slow_apply(batch: Any) -> None:
        loop.call_soon_threadsafe(entered.set)
        release.wait(5)
        original(batch)

    store._apply = slow_apply  # type: ignore[method-assign]
    store.add_spend("k", 0, 1)
    await asyncio.wait_for(entered.wait(), 5)
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(closing, 5)
    with sqlite3.connect(tmp_path / "usage.db") as db:
        assert db.execute("SELECT nano_usd FROM spend").fetchall() == [(1,)]
