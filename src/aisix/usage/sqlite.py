"""The SQLite usage ledger (the default): one file per gateway, `<data_dir>/usage.db`.

Writes and reads run in a worker thread on one connection (WAL mode) guarded by a lock.
A batch that cannot be written is counted as dropped events; its spend is kept for the next
batch, so budget spend is never lost to a transient error (a locked or full disk).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from aisix.usage.base import BatchingLedger, LedgerUnavailable, log
from aisix.usage.rows import REQUEST_COLUMNS, Batch
from aisix.usage.schema import (
    INSERT_AUDIT,
    SCHEMA_VERSION_TABLE,
    SQLITE_MIGRATIONS,
    UPSERT_DAILY,
    UPSERT_HOURLY,
    UPSERT_SPEND,
    UPSERT_TOTALS,
)

_INSERT_REQUEST = (
    f"INSERT INTO usage_requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
)


class SqliteLedger(BatchingLedger):
    backend = "sqlite"

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the file and apply pending migrations (idempotent); sync, for startup."""
        with self._lock:
            if self._db is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout=5000")
                _use_wal(db)
                migrate_sqlite(db)
            except BaseException:
                db.close()
                raise
            self._db = db

    async def _open(self) -> None:
        await asyncio.to_thread(self.open)

    async def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def _write(self, batch: Batch) -> None:
        if batch.empty:
            return
        try:
            await asyncio.to_thread(self._apply, batch)
        except (sqlite3.Error, OSError):
            log.exception("usage ledger write failed; %d events lost", batch.events)
            for key, start, nano in batch.spend:  # spend is kept for the next batch
                self.add_spend(key, start, nano)
            self.count_drops(batch.events)
            if batch.audit:
                raise

    def _apply(self, batch: Batch) -> None:
        self.open()
        with self._lock:
            db = self._db
            assert db is not None
            db.execute("BEGIN")
            try:
                db.executemany(UPSERT_HOURLY, batch.hourly)
                db.executemany(UPSERT_TOTALS, batch.totals)
                db.executemany(UPSERT_DAILY, batch.daily)
                db.executemany(_INSERT_REQUEST, batch.requests)
                db.executemany(UPSERT_SPEND, batch.spend)
                db.executemany(INSERT_AUDIT, [a.values() for a in batch.audit])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            self.open()
            with self._lock:
                assert self._db is not None
                return self._db.execute(sql, params).fetchall()

        try:
            return await asyncio.to_thread(run)
        except (sqlite3.Error, OSError) as exc:
            log.exception("usage ledger read failed")
            raise LedgerUnavailable(f"usage database unavailable: {exc}") from None

    async def _read_spend(self) -> dict[tuple[str, int], int]:
        rows = await self._fetch("SELECT key, period_start, nano_usd FROM spend", ())
        return {(key, start): nano for key, start, nano in rows}

    async def _prune(self, cutoff_ms: int) -> None:
        def run() -> None:
            self.open()
            with self._lock:
                assert self._db is not None
                self._db.execute("DELETE FROM usage_requests WHERE ts_ms < ?", (cutoff_ms,))

        await asyncio.to_thread(run)


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL once (the mode is stored in the file). The switch needs the file
    to itself and SQLite does not busy-wait for it, so a process opening the file while another
    does retries briefly."""
    for attempt in range(50):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
        time.sleep(0.02)


def migrate_sqlite(db: sqlite3.Connection) -> list[int]:
    """Apply the migrations this file lacks, each in its own write transaction (taken before
    the check, so proxy workers opening the file together apply each once); return them."""
    # every step takes the write lock up front: in WAL mode a statement that reads and then
    # writes fails at once (no busy wait) when another connection committed in between
    db.execute("BEGIN IMMEDIATE")
    db.execute(SCHEMA_VERSION_TABLE)
    db.execute("COMMIT")
    applied: list[int] = []
    for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,))
            if done.fetchone() is None:
                for statement in script.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version VALUES (?, ?)", (version, round(time.time() * 1000))
                )
                applied.append(version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied
