"""The embedded default store: one SQLite database file.

All database work runs on one dedicated thread with one connection, so the event loop never
blocks and writes from this process are serialised; `BEGIN IMMEDIATE` also serialises them
against other worker processes sharing the file. A `meta.change_seq` counter, bumped in every
write transaction, is the store revision: this process is told about its own commits at once,
other processes notice within one poll interval (250 ms). WAL journaling lets readers proceed
during writes. A file that is not a database, is corrupt, or cannot be written is a startup
error; nothing is ever recreated over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from aisix.snapshot import Record
from aisix.store.base import StoreTx, StoreUnavailable

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  value TEXT NOT NULL,
  revision INTEGER NOT NULL,
  UNIQUE (kind, id)
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('change_seq', 0);
"""


class StoreOpenError(RuntimeError):
    """The database file cannot be used; the message says why and names the path."""


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.changed = False

    def records(self) -> list[Record]:
        return _all_records(self._conn)

    def get(self, kind: str, resource_id: str) -> Record | None:
        row = self._conn.execute(
            "SELECT kind, id, value, revision FROM resources WHERE kind = ? AND id = ?",
            (kind, resource_id),
        ).fetchone()
        return _record(row) if row else None

    def put(self, kind: str, resource_id: str, value: dict[str, Any]) -> Record:
        current = self.get(kind, resource_id)
        blob = orjson.dumps(value).decode()
        if current is None:
            revision = 1
            self._conn.execute(
                "INSERT INTO resources (kind, id, value, revision) VALUES (?, ?, ?, 1)",
                (kind, resource_id, blob),
            )
        else:
            revision = current.revision + 1
            self._conn.execute(
                "UPDATE resources SET value = ?, revision = ? WHERE kind = ? AND id = ?",
                (blob, revision, kind, resource_id),
            )
        self.changed = True
        return Record(kind, resource_id, value, revision)

    def delete(self, kind: str, resource_id: str) -> bool:
        cursor = self._conn.execute(
            "DELETE FROM resources WHERE kind = ? AND id = ?", (kind, resource_id)
        )
        if cursor.rowcount:
            self.changed = True
        return cursor.rowcount > 0


def _record(row: tuple[str, str, str, int]) -> Record:
    return Record(row[0], row[1], orjson.loads(row[2]), row[3])


def _all_records(conn: sqlite3.Connection) -> list[Record]:
    rows = conn.execute("SELECT kind, id, value, revision FROM resources ORDER BY seq").fetchall()
    return [_record(row) for row in rows]


class SqliteStore:
    source_type = "sqlite"
    writable = True

    def __init__(self, path: Path, poll_interval: float = 0.25) -> None:
        self.path = path
        self.location = str(path)
        self._poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aisix-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._local_change: asyncio.Event | None = None
        self._healthy = True

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._local_change = asyncio.Event()
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(f"store.path: cannot create {self.path.parent}: {exc}") from None
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise StoreOpenError(f"store.path: {self.path} is corrupt ({check})")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreOpenError(
                f"store.path: {self.path} is not a usable SQLite database: {exc}"
            ) from None
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            self._conn = None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            self._healthy = False
            raise StoreUnavailable(f"store unavailable: {exc}") from None
        self._healthy = True
        return result

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("store unavailable: not open")
        return self._conn

    # -- reads -----------------------------------------------------------------------------

    async def load_all(self) -> tuple[list[Record], int]:
        def load() -> tuple[list[Record], int]:
            conn = self._db()
            conn.execute("BEGIN")
            try:
                return _all_records(conn), _change_seq(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(load)

    async def list(self, kind: str, limit: int | None, offset: int) -> tuple[list[Record], int]:
        def query() -> tuple[list[Record], int]:
            conn = self._db()
            total = conn.execute("SELECT count(*) FROM resources WHERE kind = ?", (kind,))
            count = int(total.fetchone()[0])
            rows = conn.execute(
                "SELECT kind, id, value, revision FROM resources WHERE kind = ? "
                "ORDER BY seq LIMIT ? OFFSET ?",
                (kind, -1 if limit is None else limit, offset),
            ).fetchall()
            return [_record(row) for row in rows], count

        return await self._run(query)

    async def get(self, kind: str, resource_id: str) -> Record | None:
        return await self._run(lambda: _SqliteTx(self._db()).get(kind, resource_id))

    # -- writes ----------------------------------------------------------------------------

    async def transact(self, fn: Callable[[StoreTx], T]) -> T:
        def run() -> tuple[T, bool]:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(conn)
            try:
                result = fn(tx)
                if tx.changed:
                    conn.execute("UPDATE meta SET v = v + 1 WHERE k = 'change_seq'")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result, tx.changed

        result, changed = await self._run(run)
        if changed and self._local_change is not None:
            self._local_change.set()
        return result

    # -- change feed -----------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[int]:
        assert self._local_change is not None
        seen = await self._run(lambda: _change_seq(self._db()))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._local_change.wait(), self._poll_interval)
            self._local_change.clear()
            try:
                current = await self._run(lambda: _change_seq(self._db()))
            except StoreUnavailable:
                continue
            if current != seen:
                seen = current
                yield current

    def connected(self) -> bool:
        return self._healthy and self._conn is not None


def _change_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT v FROM meta WHERE k = 'change_seq'").fetchone()
    return int(row[0]) if row else 0
