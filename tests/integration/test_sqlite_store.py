"""The embedded SQLite store (contract §2.3, §3.1, §3.4, §11.1) on real files in tmp_path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aisix.snapshot import Record
from aisix.store.base import StoreTx
from aisix.store.sqlite import SqliteStore, StoreOpenError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "nested" / "dir" / "aisix.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def put(store: SqliteStore, kind: str, rid: str, value: dict[str, Any]) -> Record:
    return await store.transact(lambda tx: tx.put(kind, rid, value))


async def started_watching(store: SqliteStore) -> None:
    """Return once a just-started `changes()` feed has read its starting revision.

    The feed's first step queues that read on the store's single database thread; a read
    queued after it completes only once the feed's read has.
    """
    await asyncio.sleep(0)
    await store.get("models", "barrier")


class Boom(Exception):
    pass


async def test_open_creates_missing_folders(tmp_path: Path, store: SqliteStore) -> None:
    assert (tmp_path / "nested" / "dir" / "aisix.db").is_file()
    assert store.connected()


async def test_revision_starts_at_one_and_grows(store: SqliteStore) -> None:
    first = await put(store, "models", "m1", {"display_name": "a"})
    second = await put(store, "models", "m1", {"display_name": "b"})
    assert (first.revision, second.revision) == (1, 2)
    got = await store.get("models", "m1")
    assert got == Record("models", "m1", {"display_name": "b"}, 2)
    assert await store.get("models", "nope") is None
    assert await store.get("api_keys", "m1") is None


async def test_exception_inside_transaction_rolls_everything_back(store: SqliteStore) -> None:
    await put(store, "models", "keep", {"v": 1})
    _, revision_before = await store.load_all()

    def fn(tx: StoreTx) -> None:
        tx.put("models", "new", {"v": 1})
        tx.put("models", "keep", {"v": 2})
        tx.delete("models", "keep")
        raise Boom

    with pytest.raises(Boom):
        await store.transact(fn)
    records, revision_after = await store.load_all()
    assert records == [Record("models", "keep", {"v": 1}, 1)]
    assert revision_after == revision_before
    # the store is still usable after the rollback
    assert (await put(store, "models", "new", {"v": 3})).revision == 1


async def test_store_revision_counts_changing_transactions_only(store: SqliteStore) -> None:
    _, start = await store.load_all()
    await put(store, "models", "m1", {})
    await store.transact(lambda tx: tx.get("models", "m1"))
    await store.transact(lambda tx: tx.delete("models", "absent"))
    _, after_one = await store.load_all()
    assert after_one == start + 1
    assert await store.transact(lambda tx: tx.delete("models", "m1")) is True
    _, after_delete = await store.load_all()
    assert after_delete == start + 2


async def test_creation_order_kept_across_updates(store: SqliteStore) -> None:
    for rid in ("c", "a", "b"):
        await put(store, "models", rid, {"id": rid})
    await put(store, "models", "c", {"id": "c", "updated": True})
    await put(store, "api_keys", "k", {})
    records, _ = await store.load_all()
    assert [r.id for r in records] == ["c", "a", "b", "k"]
    listed, total = await store.list("models", None, 0)
    assert [r.id for r in listed] == ["c", "a", "b"] and total == 3
    assert listed[0].value == {"id": "c", "updated": True}


async def test_list_paging_and_totals(store: SqliteStore) -> None:
    for i in range(5):
        await put(store, "models", f"m{i}", {"i": i})
    await put(store, "api_keys", "k", {})
    page, total = await store.list("models", 2, 1)
    assert [r.id for r in page] == ["m1", "m2"] and total == 5
    tail, total = await store.list("models", 10, 4)
    assert [r.id for r in tail] == ["m4"] and total == 5
    beyond, total = await store.list("models", 2, 50)
    assert beyond == [] and total == 5
    empty, total = await store.list("budget_policies", None, 0)
    assert empty == [] and total == 0


async def test_local_commit_is_announced_within_100ms(tmp_path: Path) -> None:
    # a long poll interval: only the in-process notification can meet the 100 ms bound
    s = SqliteStore(tmp_path / "a.db", poll_interval=30)
    await s.open()
    feed = s.changes()
    try:
        waiter = asyncio.ensure_future(anext(feed))
        await started_watching(s)
        await put(s, "models", "m1", {})
        _, revision = await s.load_all()
        started = time.monotonic()
        assert await asyncio.wait_for(waiter, 0.1) == revision
        assert time.monotonic() - started < 0.1
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
        await s.close()


async def test_other_process_change_is_seen_within_one_second(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writer, watcher = SqliteStore(path), SqliteStore(path)
    await writer.open()
    await watcher.open()
    feed = watcher.changes()
    try:
        waiter = asyncio.ensure_future(anext(feed))
        await started_watching(watcher)
        await put(writer, "models", "m1", {"display_name": "x"})
        _, revision = await writer.load_all()
        assert await asyncio.wait_for(waiter, 1.0) == revision
        records, seen = await watcher.load_all()
        assert seen == revision
        assert records == [Record("models", "m1", {"display_name": "x"}, 1)]
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
        await writer.close()
        await watcher.close()


async def test_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "aisix.db"
    garbage = b"this is not a database\x00\xff" * 200
    path.write_bytes(garbage)
    s = SqliteStore(path)
    with pytest.raises(StoreOpenError) as caught:
        await s.open()
    await s.close()
    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "aisix.db"
    first = SqliteStore(path)
    await first.open()
    await put(first, "provider_keys", "pk", {"display_name": "p", "secret": "s"})
    await put(first, "models", "m", {"display_name": "m"})
    await put(first, "provider_keys", "pk", {"display_name": "p2", "secret": "s"})
    records, revision = await first.load_all()
    await first.close()

    second = SqliteStore(path)
    await second.open()
    try:
        assert await second.load_all() == (records, revision)
        assert (await second.get("provider_keys", "pk")) == Record(
            "provider_keys", "pk", {"display_name": "p2", "secret": "s"}, 2
        )
        assert (await put(second, "models", "m", {})).revision == 2
    finally:
        await second.close()
