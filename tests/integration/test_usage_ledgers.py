"""The usage ledger on both backends, real SQLite files and a real PostgreSQL server: the
same reads (§10.4, time series, top-N) from either, versioned migrations applied once, the
spill file while PostgreSQL is down and its replay (nothing lost, nothing doubled), budget
spend persisted across restarts, and a pre-versioning SQLite file adopted unchanged."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "limits"))
from limits_helpers import PK, FakeClock, key, model, snapshot

from aisix.events import RequestFinished, Usage
from aisix.usage import BatchingLedger, SqliteLedger, UsageApi
from aisix.usage.postgres import PostgresLedger
from aisix.usage.rows import AuditRow
from aisix.usage.spill import SpillFile
from fakes.postgres_server import PostgresServer

LedgerFactory = Callable[..., BatchingLedger]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def event(
    k: str,
    at: float,
    *,
    m: str = "m1",
    pk: str = "pk1",
    tokens: tuple[int, int] = (10, 5),
    cost: float = 0.5,
    latency_ms: float = 40.0,
    outcome: str = "success",
    team: str | None = None,
) -> RequestFinished:
    return RequestFinished(
        event_id=str(uuid.uuid4()),
        request_id="r",
        ts=at,
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        stream=False,
        status=200 if outcome == "success" else 502,
        outcome=outcome,
        latency_ms=latency_ms,
        client_ip=None,
        api_key_id=k,
        team_id=team,
        model_id=m,
        provider_key_id=pk,
        attempts=1,
        usage=Usage(tokens[0], tokens[1], 0, sum(tokens)),
        cost_usd=cost,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerFactory:
    """Factory of ledgers of one backend over one database (each call: a new process's)."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else ""

    def make(**options: Any) -> BatchingLedger:
        if request.param == "sqlite":
            return SqliteLedger(tmp_path / "usage.db", **options)
        spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
        return PostgresLedger(dsn, spill, **options)

    return make


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn())  # type: ignore[arg-type]


def test_reads_are_the_same_on_both_backends(make_ledger: LedgerFactory) -> None:
    k1, k2 = key("k1", team="t"), key("k2")
    snap = snapshot([k1, k2], [model("m1"), model("m2")])
    clock = FakeClock(ts("2026-01-05T09:30"))

    async def main() -> list[tuple[int, dict[str, Any]]]:
        ledger = make_ledger(clock=clock)
        await ledger.start()
        api = UsageApi(ledger, None, clock=clock)
        for latency in (10, 20, 30, 40, 900):
            ledger.on_event(event("k1", ts("2026-01-05T09:10:30"), latency_ms=latency, team="t"))
        ledger.on_event(event("k1", ts("2026-01-05T09:12"), m="m2", outcome="upstream_error"))
        ledger.on_event(event("k2", ts("2026-01-05T07:59"), tokens=(100, 100), cost=2.0))
        out = [
            await api.timeseries(
                {"bucket": "minute", "from": "2026-01-05T09:09:00Z", "to": "2026-01-05T09:13:00Z"}
            ),
            await api.timeseries(
                {
                    "bucket": "hour",
                    "from": "2026-01-05T07:00:00Z",
                    "to": "2026-01-05T09:30:00Z",
                    "api_key_id": "k1",
                }
            ),
            await api.timeseries({"bucket": "day"}),
            await api.top({"by": "api_key", "metric": "requests"}, snap),
            await api.top({"by": "model", "limit": "1"}, snap),
            await api.usage({"group_by": "provider_key"}, snap),
            await api.timeseries({"bucket": "minute", "from": "2026-01-01T00:00:00Z"}),
            await api.timeseries({"bucket": "week"}),
            await api.top({"by": "user"}, snap),
            await api.top({"metric": "latency"}, snap),
            await api.top({"limit": "1001"}, snap),
        ]
        await ledger.close()
        return out

    minute, hourly, daily, top_keys, top_model, by_pk, *bad = run(main)
    assert minute[0] == 200
    assert [p["ts"] for p in minute[1]["points"]] == [
        "2026-01-05T09:09:00Z",
        "2026-01-05T09:10:00Z",
        "2026-01-05T09:11:00Z",
        "2026-01-05T09:12:00Z",
    ]
    empty, busy, quiet, failed = minute[1]["points"]
    zeros = {
        **dict.fromkeys(
            ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"), 0
        ),
        "cost_usd": 0.0,
        "latency_p50_ms": None,
        "latency_p95_ms": None,
    }
    assert empty == {"ts": "2026-01-05T09:09:00Z", **zeros}
    assert quiet == {"ts": "2026-01-05T09:11:00Z", **zeros}
    assert busy["requests"] == 5 and busy["errors"] == 0 and busy["total_tokens"] == 75
    assert busy["cost_usd"] == 2.5
    assert 20 < busy["latency_p50_ms"] <= 50  # the 30 ms request's bucket is (20, 50]
    assert 750 < busy["latency_p95_ms"] <= 1000  # the 900 ms request's bucket
    assert failed["requests"] == 1 and failed["errors"] == 1
    assert hourly[1]["bucket"] == "hour" and hourly[1]["to"] == "2026-01-05T10:00:00Z"
    assert [(p["ts"], p["requests"], p["errors"]) for p in hourly[1]["points"]] == [
        ("2026-01-05T07:00:00Z", 0, 0),  # k2's traffic is filtered out
        ("2026-01-05T08:00:00Z", 0, 0),
        ("2026-01-05T09:00:00Z", 6, 1),
    ]
    assert 20 < hourly[1]["points"][2]["latency_p50_ms"] <= 50
    assert len(daily[1]["points"]) == 31 and daily[1]["points"][-1]["requests"] == 7
    assert daily[1]["points"][-1]["ts"] == "2026-01-05T00:00:00Z"
    assert top_keys[1]["rows"] == [
        {
            "key": "k1",
            "display_name": None,
            "requests": 6,
            "prompt_tokens": 60,
            "completion_tokens": 30,
            "total_tokens": 90,
            "cost_usd": 3.0,
            "errors": 1,
        },
        {
            "key": "k2",
            "display_name": None,
            "requests": 1,
            "prompt_tokens": 100,
            "completion_tokens": 100,
            "total_tokens": 200,
            "cost_usd": 2.0,
            "errors": 0,
        },
    ]
    assert top_keys[1]["by"] == "api_key" and top_keys[1]["metric"] == "requests"
    assert [(r["key"], r["display_name"], r["cost_usd"]) for r in top_model[1]["rows"]] == [
        ("m1", "m1", 4.5)
    ]
    assert by_pk[1]["rows"] == [
        {
            "key": "pk1",
            "display_name": PK.value.display_name,
            "requests": 7,
            "prompt_tokens": 160,
            "completion_tokens": 130,
            "total_tokens": 290,
            "cost_usd": 5.0,
        }
    ]
    assert [status for status, _ in bad] == [400, 400, 400, 400, 400]
    assert "at most 2000" in bad[0][1]["error_msg"]
    assert bad[1][1] == {"error_msg": "bucket must be one of minute, hour, day"}


def test_spend_and_audit_persist_across_restarts(make_ledger: LedgerFactory) -> None:
    async def first() -> None:
        ledger = make_ledger()
        await ledger.start()
        ledger.add_spend("api_key:k1", 1_767_225_600, 1500)
        ledger.add_spend("api_key:k1", 1_767_225_600, 500)
        await ledger.record_audit(
            AuditRow(
                "a1", 1000, "fp", "create", "models", "m1", {"x": {"before": None, "after": 1}}
            )
        )
        await ledger.close()

    async def second() -> tuple[dict[tuple[str, int], int], list[tuple[Any, ...]]]:
        ledger = make_ledger()
        await ledger.start()
        spend = ledger.load_spend()
        rows = await ledger.query("SELECT id, action, diff FROM audit_log", ())
        await ledger.close()
        return spend, rows

    run(first)
    spend, audit = run(second)
    assert spend == {("api_key:k1", 1_767_225_600): 2000}
    assert audit == [("a1", "create", '{"x":{"before":null,"after":1}}')]


def test_postgres_migrations_apply_once(pg_dsn: str, tmp_path: Path) -> None:
    async def main() -> list[tuple[Any, ...]]:
        ledgers = [PostgresLedger(pg_dsn, SpillFile(tmp_path / f"s{i}", 1000)) for i in range(3)]
        await asyncio.gather(*(ledger.start() for ledger in ledgers))  # replicas start together
        for ledger in ledgers:
            await ledger.close()
        again = PostgresLedger(pg_dsn, SpillFile(tmp_path / "s", 1000))
        await again.start()
        rows = await again.query("SELECT version FROM schema_version ORDER BY version", ())
        await again.close()
        return rows

    assert run(main) == [(1,)]


def test_postgres_outage_spills_and_replays_everything_once(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = own_postgres.create_database()
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    at = time.time()  # inside the retention: the writer's prune must not touch these rows
    counted: dict[str, int] = {"spilled": 0, "replayed": 0}

    def bump(name: str) -> Callable[[int], None]:
        return lambda n: counted.__setitem__(name, counted[name] + n)

    async def main() -> tuple[list[tuple[Any, ...]], int, int]:
        ledger = PostgresLedger(
            dsn,
            spill,
            timeout_s=1.0,
            flush_interval_s=0.05,
            on_spill=bump("spilled"),
            on_replay=bump("replayed"),
        )
        await ledger.start()
        for _ in range(3):
            ledger.on_event(event("k1", at))
        await ledger.flush()
        await asyncio.to_thread(own_postgres.stop)
        for _ in range(4):
            ledger.on_event(event("k1", at))
        ledger.add_spend("api_key:k1", 1_767_225_600, 700)
        await ledger.flush()  # database down: to the spill file, not lost
        ledger.on_event(event("k2", at))
        await ledger.flush()
        assert spill.size() > 0 and ledger.spilled == 5
        unavailable = await UsageApi(ledger, None).timeseries({"bucket": "hour"})
        assert unavailable[0] == 503 and "usage database unavailable" in unavailable[1]["error_msg"]
        await asyncio.to_thread(own_postgres.start)
        deadline = asyncio.get_running_loop().time() + 15
        while spill.size() > 0:  # the writer task replays once the database answers
            assert asyncio.get_running_loop().time() < deadline, "spill never replayed"
            await asyncio.sleep(0.05)
        rows = await ledger.query(
            "SELECT api_key_id, SUM(requests) FROM usage_hourly GROUP BY api_key_id "
            "ORDER BY api_key_id",
            (),
        )
        per_request = await ledger.query("SELECT COUNT(*) FROM usage_requests", ())
        spend = await ledger.query("SELECT nano_usd FROM spend", ())
        await ledger.close()
        return rows, int(per_request[0][0]), int(spend[0][0])

    hourly, per_request, spend = run(main)
    assert hourly == [("k1", 7), ("k2", 1)]
    assert per_request == 8 and spend == 700
    assert counted == {"spilled": 5, "replayed": 5}


def test_a_replayed_batch_is_applied_once(pg_dsn: str, tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)

    async def main() -> list[tuple[Any, ...]]:
        ledger = PostgresLedger(pg_dsn, spill)
        await ledger.start()
        ledger.on_event(event("k1", ts("2026-01-05T09:10")))
        from aisix.usage.rows import build_batch

        batch = build_batch(list(ledger._pending), {})
        ledger._pending.clear()
        assert await ledger._apply(batch) is True
        spill.append(batch.to_line())  # as if the commit's answer had been lost
        await ledger._idle()
        rows = await ledger.query("SELECT SUM(requests) FROM usage_hourly", ())
        await ledger.close()
        return rows

    assert run(main) == [(1,)]
    assert spill.size() == 0


def test_a_full_spill_file_keeps_the_oldest_and_counts_drops(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1500)
    dead = "postgresql://aisix@127.0.0.1:1/none"  # nothing listens on port 1
    drops: list[int] = []

    async def main() -> PostgresLedger:
        ledger = PostgresLedger(dead, spill, timeout_s=0.5, on_drop=lambda: drops.append(1))
        await ledger.start()  # an unreachable database does not stop the gateway
        for _ in range(10):
            ledger.on_event(event("k1", ts("2026-01-05T09:10")))
            await ledger.flush()
        await ledger.close()
        return ledger

    ledger = run(main)
    kept = spill.claim()
    assert 0 < len(kept) < 10 and ledger.spilled == len(kept)
    assert len(drops) == ledger.drops == 10 - len(kept)
    assert spill.size() <= 1500


def test_sqlite_file_from_before_versioning_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE usage_hourly (hour INTEGER NOT NULL, api_key_id TEXT NOT NULL, "
        "model_id TEXT NOT NULL, team_id TEXT NOT NULL, requests INTEGER NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
        "total_tokens INTEGER NOT NULL, cost_nano_usd INTEGER NOT NULL, "
        "PRIMARY KEY (hour, api_key_id, model_id, team_id)) WITHOUT ROWID;"
        "CREATE TABLE spend (key TEXT NOT NULL, period_start INTEGER NOT NULL, "
        "nano_usd INTEGER NOT NULL, PRIMARY KEY (key, period_start)) WITHOUT ROWID;"
        "INSERT INTO usage_hourly VALUES (1767603600, 'k1', 'm1', '', 4, 40, 20, 60, 2000000000);"
        "INSERT INTO spend VALUES ('api_key:k1', 1767225600, 2000000000);"
    )
    db.close()
    snap = snapshot([key("k1")], [model("m1")])

    async def main() -> tuple[dict[str, Any], dict[tuple[str, int], int], list[Any]]:
        ledger = SqliteLedger(path)
        await ledger.start()
        ledger.on_event(event("k1", ts("2026-01-05T09:10"), pk="pk1"))
        clock = FakeClock(ts("2026-01-05T09:30"))
        api = UsageApi(ledger, None, clock=clock)
        _, body = await api.usage({"group_by": "model"}, snap)
        _, series = await api.timeseries({"from": "2026-01-05T09:00:00Z"})  # the rollup table
        assert [p["requests"] for p in series["points"]] == [5]
        versions = await ledger.query("SELECT version FROM schema_version", ())
        spend = ledger.load_spend()
        await ledger.close()
        return body, spend, versions

    body, spend, versions = run(main)
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in body["rows"]] == [("m1", 5, 2.5)]
    assert spend == {("api_key:k1", 1767225600): 2000000000}
    assert versions == [(1,), (2,)]


def test_per_request_rows_are_pruned_after_the_retention(make_ledger: LedgerFactory) -> None:
    clock = FakeClock(ts("2026-01-10T12:00"))

    async def main() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ledger = make_ledger(clock=clock, retention_days=2, flush_interval_s=0.02)
        await ledger.start()
        ledger.on_event(event("k1", ts("2026-01-07T12:00")))  # older than two days
        ledger.on_event(event("k1", ts("2026-01-09T12:00")))
        await ledger.flush()
        await ledger._prune(round(clock() * 1000) - 2 * 86_400_000)
        kept = await ledger.query("SELECT ts_ms FROM usage_requests", ())
        hourly = await ledger.query("SELECT SUM(requests) FROM usage_hourly", ())
        await ledger.close()
        return kept, hourly

    kept, hourly = run(main)
    assert kept == [(round(ts("2026-01-09T12:00") * 1000),)]
    assert int(hourly[0][0]) == 2  # aggregates are kept


def test_sqlite_migrations_apply_once_when_workers_open_together(tmp_path: Path) -> None:
    import threading

    for attempt in range(5):  # several rounds: the race is in the first milliseconds
        path = tmp_path / f"usage-{attempt}.db"
        ledgers = [SqliteLedger(path) for _ in range(6)]
        errors: list[BaseException] = []
        gate = threading.Barrier(len(ledgers))

        def open_one(
            ledger: SqliteLedger,
            gate: threading.Barrier = gate,
            errors: list[BaseException] = errors,
        ) -> None:
            gate.wait()
            try:
                ledger.open()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one, args=(ledger,)) for ledger in ledgers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        db = sqlite3.connect(path)
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(1,), (2,)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
        for ledger in ledgers:
            asyncio.run(ledger._close())


def test_ranges_across_whole_days_and_partial_hours(make_ledger: LedgerFactory) -> None:
    """Whole days are read from the daily rollup, the edges from hourly rows: same answer."""
    snap = snapshot([key("k1")], [model("m1")])
    clock = FakeClock(ts("2026-01-06T09:30"))
    stamps = ["2026-01-02T23:30", "2026-01-03T00:10", "2026-01-04T12:00", "2026-01-05T09:10"]

    async def main() -> list[int]:
        ledger = make_ledger(clock=clock)
        await ledger.start()
        api = UsageApi(ledger, None, clock=clock)
        for i, stamp in enumerate(stamps):
            ledger.on_event(event("k1", ts(stamp), cost=10.0**i))
        counts = []
        for start, end in [
            ("2026-01-02T23:00:00Z", "2026-01-05T09:30:00Z"),  # everything
            ("2026-01-03T01:00:00Z", "2026-01-06T00:00:00Z"),  # whole days from Jan 3 01:00
            ("2026-01-01T00:00:00Z", "2026-01-04T12:00:00Z"),  # to is exclusive
            ("2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"),  # exactly one day
        ]:
            query = {"from": start, "to": end}
            _, report = await api.usage(query, snap)
            _, one = await api.apikey_usage("k1", query, snap)
            _, top = await api.top(query, snap)
            assert report["rows"][0]["cost_usd"] == one["cost_usd"] == top["rows"][0]["cost_usd"]
            counts.append(round(one["cost_usd"]))
        await ledger.close()
        return counts

    assert run(main) == [1111, 1100, 11, 10]


def test_retention_zero_keeps_no_per_request_rows(make_ledger: LedgerFactory) -> None:
    async def main() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        ledger = make_ledger(retention_days=0)
        await ledger.start()
        for _ in range(3):
            ledger.on_event(event("k1", ts("2026-01-05T09:10")))
        await ledger.flush()
        rows = await ledger.query("SELECT COUNT(*) FROM usage_requests", ())
        hourly = await ledger.query("SELECT SUM(requests) FROM usage_hourly", ())
        await ledger.close()
        return rows, hourly

    rows, hourly = run(main)
    assert int(rows[0][0]) == 0 and int(hourly[0][0]) == 3
