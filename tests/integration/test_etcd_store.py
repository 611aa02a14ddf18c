"""The etcd store (contract §3.1, §3.4, §4.2, §11.1) against a real etcd 3.4 server.

One etcd serves the module (each test writes under its own prefix); the tests that stop etcd
or enable authentication start their own.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from aisix.settings import EtcdSettings
from aisix.snapshot import Record
from aisix.store.base import StoreTx, StoreUnavailable
from aisix.store.etcd import LOCK_KEY, NOT_AN_OBJECT, EtcdStore
from fakes.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"/aisix-test-{uuid.uuid4().hex[:12]}"


def make(server: EtcdServer | str, prefix: str, **fields: Any) -> EtcdStore:
    """A store on `server` (or a list of endpoints), with short timeouts."""
    endpoints = [server.url] if isinstance(server, EtcdServer) else server.split(",")
    fields.setdefault("dial_timeout_ms", 1000)
    fields.setdefault("request_timeout_ms", 2000)
    return EtcdStore(EtcdSettings(endpoints=endpoints, prefix=prefix, **fields))


@pytest.fixture
async def store(etcd: EtcdServer, prefix: str) -> AsyncIterator[EtcdStore]:
    s = make(etcd, prefix)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def put(store: EtcdStore, kind: str, rid: str, value: dict[str, Any]) -> Record:
    return await store.transact(lambda tx: tx.put(kind, rid, value))


class Boom(Exception):
    pass


class NameTaken(Exception):
    pass


def create_unique(kind: str, rid: str, name: str) -> Any:
    """A transaction function like the admin API's: uniqueness check, then the write."""

    def fn(tx: StoreTx) -> Record:
        if any(r.kind == kind and r.value.get("display_name") == name for r in tx.records()):
            raise NameTaken(name)
        return tx.put(kind, rid, {"display_name": name})

    return fn


# -- reads, writes, revisions --------------------------------------------------------------


async def test_put_get_and_revision_is_the_key_version(
    store: EtcdStore, etcd: EtcdServer, prefix: str
) -> None:
    assert not store.connected()  # nothing asked yet
    first = await put(store, "models", "m1", {"display_name": "a"})
    second = await put(store, "models", "m1", {"display_name": "b"})
    assert store.connected()
    assert (first.revision, second.revision) == (1, 2)
    assert await store.get("models", "m1") == Record("models", "m1", {"display_name": "b"}, 2)
    assert await store.get("models", "nope") is None
    assert await store.get("api_keys", "m1") is None
    # layout: <prefix>/<segment>/<id> holding the bare value JSON; revision == etcd version
    raw = etcd.get(f"{prefix}/models/m1")
    assert raw is not None
    assert orjson.loads(raw["value"]) == {"display_name": "b"}
    assert raw["version"] == 2
    assert store.location == f"{etcd.url}{prefix}"
    assert store.source_type == "etcd" and store.writable


async def test_creation_order_paging_and_totals(store: EtcdStore) -> None:
    for rid in ("c", "a", "b", "e", "d"):
        await put(store, "models", rid, {"id": rid})
    await put(store, "models", "c", {"id": "c", "updated": True})
    await put(store, "api_keys", "k", {})
    records, _ = await store.load_all()
    assert [r.id for r in records] == ["c", "a", "b", "e", "d", "k"]
    assert records[0] == Record("models", "c", {"id": "c", "updated": True}, 2)
    listed, total = await store.list("models", None, 0)
    assert [r.id for r in listed] == ["c", "a", "b", "e", "d"] and total == 5
    page, total = await store.list("models", 2, 1)
    assert [r.id for r in page] == ["a", "b"] and total == 5
    tail, _ = await store.list("models", 10, 4)
    assert [r.id for r in tail] == ["d"]
    beyond, total = await store.list("models", 2, 50)
    assert beyond == [] and total == 5
    empty, total = await store.list("budget_policies", None, 0)
    assert empty == [] and total == 0


async def test_delete_and_recreate_starts_at_revision_one(store: EtcdStore) -> None:
    await put(store, "models", "m", {"v": 1})
    await put(store, "models", "m", {"v": 2})
    assert await store.transact(lambda tx: tx.delete("models", "m")) is True
    assert await store.transact(lambda tx: tx.delete("models", "m")) is False
    assert await store.get("models", "m") is None
    assert (await put(store, "models", "m", {"v": 3})).revision == 1


async def test_store_revision_moves_only_on_changing_transactions(store: EtcdStore) -> None:
    await put(store, "models", "m1", {})
    _, start = await store.load_all()
    assert await store.transact(lambda tx: tx.get("models", "m1")) is not None
    await store.transact(lambda tx: tx.delete("models", "absent"))
    _, after = await store.load_all()
    assert after == start
    await put(store, "models", "m2", {})
    _, after_put = await store.load_all()
    assert after_put == start + 1  # one txn: the resource and the write-lock marker together


async def test_transaction_commits_all_writes_at_one_revision(
    store: EtcdStore, etcd: EtcdServer, prefix: str
) -> None:
    await put(store, "provider_keys", "gone", {"x": 1})

    def fn(tx: StoreTx) -> int:
        tx.put("provider_keys", "pk", {"display_name": "p"})
        tx.put("models", "m", {"display_name": "m", "provider_key_id": "pk"})
        tx.put("models", "m", {"display_name": "m2", "provider_key_id": "pk"})  # last op wins
        tx.delete("provider_keys", "gone")
        assert [r.id for r in tx.records()] == ["pk", "m"]  # the tx sees its own writes
        return 7

    assert await store.transact(fn) == 7
    pk, m = etcd.get(f"{prefix}/provider_keys/pk"), etcd.get(f"{prefix}/models/m")
    assert pk is not None and m is not None
    assert pk["mod_revision"] == m["mod_revision"]
    assert etcd.get(f"{prefix}/provider_keys/gone") is None
    assert (await store.get("models", "m")) == Record(
        "models", "m", {"display_name": "m2", "provider_key_id": "pk"}, 1
    )
    lock = etcd.get(f"{prefix}/{LOCK_KEY}")
    assert lock is not None and lock["mod_revision"] == m["mod_revision"]
    records, _ = await store.load_all()
    assert all(not r.id.startswith("_") and r.kind != "_meta" for r in records)


async def test_exception_inside_transaction_writes_nothing(store: EtcdStore) -> None:
    await put(store, "models", "keep", {"v": 1})
    before = await store.load_all()

    def fn(tx: StoreTx) -> None:
        tx.put("models", "new", {"v": 1})
        tx.put("models", "keep", {"v": 2})
        tx.delete("models", "keep")
        raise Boom

    with pytest.raises(Boom):
        await store.transact(fn)
    assert await store.load_all() == before
    assert (await put(store, "models", "new", {"v": 3})).revision == 1


# -- concurrent writers ----------------------------------------------------------------------


async def test_conflicting_unique_creates_from_two_stores_exactly_one_wins(
    etcd: EtcdServer, prefix: str
) -> None:
    """A reads, B commits the same name in between, A's compare fails, A re-runs and sees B."""
    a = make(etcd, prefix)
    await a.open()
    calls = 0

    def b_commits_now() -> None:
        async def run() -> None:
            b = make(etcd, prefix)
            await b.open()
            try:
                await b.transact(create_unique("models", "from-b", "same-name"))
            finally:
                await b.close()

        thread = threading.Thread(target=lambda: asyncio.run(run()))
        thread.start()
        thread.join(10)

    def fn(tx: StoreTx) -> Record:
        nonlocal calls
        calls += 1
        if calls == 1:
            b_commits_now()  # after A's read, before A's commit
        return create_unique("models", "from-a", "same-name")(tx)

    try:
        with pytest.raises(NameTaken):
            await a.transact(fn)
        assert calls == 2  # the compare failed once, the retry saw B's record
        records, _ = await a.load_all()
        assert [(r.id, r.value) for r in records] == [("from-b", {"display_name": "same-name"})]
    finally:
        await a.close()


async def test_racing_unique_creates_from_two_stores(etcd: EtcdServer, prefix: str) -> None:
    stores = [make(etcd, prefix), make(etcd, prefix)]
    for s in stores:
        await s.open()
    try:
        for round_no in range(5):
            name = f"name-{round_no}"
            outcomes = await asyncio.gather(
                *(
                    s.transact(create_unique("models", f"{name}-{i}", name))
                    for i, s in enumerate(stores)
                ),
                return_exceptions=True,
            )
            winners = [o for o in outcomes if isinstance(o, Record)]
            assert len(winners) == 1, outcomes
            assert all(isinstance(o, NameTaken) for o in outcomes if o is not winners[0])
        records, _ = await stores[0].load_all()
        assert len(records) == 5
    finally:
        for s in stores:
            await s.close()


async def test_parallel_writes_through_one_store_all_commit(store: EtcdStore) -> None:
    created = await asyncio.gather(*(put(store, "models", f"m{i}", {"i": i}) for i in range(20)))
    assert [r.revision for r in created] == [1] * 20
    records, _ = await store.load_all()
    assert sorted(r.id for r in records) == sorted(f"m{i}" for i in range(20))


async def test_direct_write_between_read_and_commit_reruns_the_transaction(
    store: EtcdStore, etcd: EtcdServer, prefix: str
) -> None:
    calls = 0

    def fn(tx: StoreTx) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # an operator writes some other key meanwhile
            etcd.put(f"{prefix}/provider_keys/direct", b'{"display_name": "d"}')
        tx.put("models", "m", {"seen": len(tx.records())})
        return calls

    assert await store.transact(fn) == 2
    assert (await store.get("models", "m")) == Record("models", "m", {"seen": 1}, 1)


# -- change feed -----------------------------------------------------------------------------


async def test_changes_seen_by_a_second_store_within_one_second(
    etcd: EtcdServer, prefix: str
) -> None:
    writer, watcher = make(etcd, prefix), make(etcd, prefix)
    await writer.open()
    await watcher.open()
    await watcher.load_all()
    feed = watcher.changes()
    try:
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)  # let the watch start
        await put(writer, "models", "m1", {"display_name": "x"})
        _, revision = await writer.load_all()
        started = time.monotonic()
        assert await asyncio.wait_for(waiter, 1.0) == revision
        assert time.monotonic() - started < 1.0
        assert watcher.connected()
        records, seen = await watcher.load_all()
        assert seen == revision
        assert records == [Record("models", "m1", {"display_name": "x"}, 1)]
        # a direct etcd write is a change like any other; a non-object value still loads
        revision = etcd.put(f"{prefix}/models/raw", b"not json")
        assert await asyncio.wait_for(anext(feed), 1.0) == revision
        raw = await watcher.get("models", "raw")
        assert raw is not None and NOT_AN_OBJECT in raw.value
        # keys outside the prefix are not changes
        etcd.put(f"{prefix}-other/models/x", b"{}")
        revision = etcd.put(f"{prefix}/api_keys/k", b"{}")
        assert await asyncio.wait_for(anext(feed), 1.0) == revision
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
        await writer.close()
        await watcher.close()


async def test_compacted_history_forces_a_full_reload(etcd: EtcdServer, prefix: str) -> None:
    s = make(etcd, prefix)
    await s.open()
    try:
        await s.load_all()
        for i in range(3):
            await put(s, "models", f"m{i}", {})
        newest = etcd.put(f"{prefix}/models/last", b"{}")
        etcd.call("/v3/kv/compaction", {"revision": newest, "physical": True})
        feed = s.changes()
        try:
            assert await asyncio.wait_for(anext(feed), 2.0) == newest
            records, revision = await s.load_all()  # what the supervisor does next
            assert len(records) == 4 and revision == newest
            later = etcd.put(f"{prefix}/models/later", b"{}")
            assert await asyncio.wait_for(anext(feed), 1.0) == later
        finally:
            await feed.aclose()  # type: ignore[attr-defined]
    finally:
        await s.close()


async def test_quiet_watch_checks_etcd_and_notices_missed_changes(
    etcd: EtcdServer, prefix: str
) -> None:
    s = make(etcd, prefix)
    s.watch_check_interval = 0.2
    await s.open()
    feed = s.changes()
    try:
        await put(s, "models", "m", {})
        await s.load_all()
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.9)  # several quiet-period checks pass without a false alarm
        assert not waiter.done()
        revision = etcd.put(f"{prefix}/models/n", b"{}")
        assert await asyncio.wait_for(waiter, 1.0) == revision
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.05)
        s._seen = 0  # pretend the stream silently lost the events etcd holds
        with pytest.raises(StoreUnavailable, match="watch missed changes"):
            await asyncio.wait_for(waiter, 2.0)
    finally:
        await feed.aclose()  # type: ignore[attr-defined]
        await s.close()


# -- outages -------------------------------------------------------------------------------


async def test_etcd_down_is_store_unavailable_and_recovers(own_etcd: EtcdServer) -> None:
    s = make(own_etcd, "/aisix")
    await s.open()
    try:
        await put(s, "models", "m", {"v": 1})
        await s.load_all()
        feed = s.changes()
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)
        own_etcd.stop()
        with pytest.raises(StoreUnavailable, match=r"^store unavailable: "):
            await asyncio.wait_for(waiter, 5.0)
        assert not s.connected()
        for call in (
            s.load_all(),
            s.get("models", "m"),
            s.list("models", None, 0),
            put(s, "models", "m", {"v": 2}),
        ):
            with pytest.raises(StoreUnavailable, match=r"^store unavailable: etcd http://"):
                await call
        assert not s.connected()
        with pytest.raises(StoreUnavailable):
            await anext(s.changes())

        own_etcd.start()
        records, _ = await s.load_all()
        assert records == [Record("models", "m", {"v": 1}, 1)]
        assert s.connected()
        feed = s.changes()
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)
        assert (await put(s, "models", "m", {"v": 2})).revision == 2
        _, revision = await s.load_all()
        assert await asyncio.wait_for(waiter, 1.0) == revision
        await feed.aclose()  # type: ignore[attr-defined]
    finally:
        await s.close()


async def test_unreachable_endpoint_is_skipped(etcd: EtcdServer, prefix: str) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    s = make(f"{dead},{etcd.url}", prefix)
    await s.open()
    try:
        assert (await put(s, "models", "m", {})).revision == 1
        assert s.location == f"{dead},{etcd.url}{prefix}"
    finally:
        await s.close()


def _closed_port() -> int:
    from fakes.etcd_server import unused_port

    return unused_port()


async def test_username_and_password(own_etcd: EtcdServer) -> None:
    own_etcd.call("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    own_etcd.call("/v3/auth/role/add", {"name": "root"})
    own_etcd.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    own_etcd.call("/v3/auth/enable", {})
    good = make(own_etcd, "/aisix", username="root", password="rootpw")
    bad = make(own_etcd, "/aisix", username="root", password="wrong")
    anonymous = make(own_etcd, "/aisix")
    for s in (good, bad, anonymous):
        await s.open()
    try:
        assert (await put(good, "models", "m", {})).revision == 1
        assert await good.get("models", "m") is not None
        good._tokens = {k: "bogus-token" for k in good._tokens}  # expired: re-authenticates
        assert (await good.list("models", None, 0))[1] == 1
        feed = good.changes()
        waiter = asyncio.ensure_future(anext(feed))
        await asyncio.sleep(0.2)
        await put(good, "models", "n", {})
        await asyncio.wait_for(waiter, 1.0)
        await feed.aclose()  # type: ignore[attr-defined]
        for s in (bad, anonymous):
            with pytest.raises(StoreUnavailable) as caught:
                await s.load_all()
            assert "wrong" not in str(caught.value) and "rootpw" not in str(caught.value)
    finally:
        for s in (good, bad, anonymous):
            await s.close()
