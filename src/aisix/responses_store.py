"""Stored Responses API answers: `GET`/`DELETE /v1/responses/{id}` and `previous_response_id`.

A translated `/v1/responses` call with `store` (the default) is kept: its `response` object and
the conversation items (the expanded input plus the output), scoped to the caller key that made
it, for `ttl_s`, at most `max_rows` of them (the oldest go first). Writes never wait on disk: a
record enters a bounded in-memory cache at once (so a GET right after the answer finds it) and
a background task writes batches to the resource store's database: the SQLite file on its
own thread, or etcd (`BlobStore`: one key per answer outside the resource prefix, with a lease
of `ttl_s`, so every replica sees them). With a resources file the cache alone holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

log = logging.getLogger("aisix.responses")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  id TEXT PRIMARY KEY,
  api_key_id TEXT NOT NULL,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""
_FLUSH_S = 0.05
_PRUNE_S = 60.0


@runtime_checkable
class BlobStore(Protocol):
    """Keyed values with a time to live (the etcd resource store offers it)."""

    async def blob_put(self, name: str, value: bytes, ttl_s: int) -> None: ...

    async def blob_get(self, name: str) -> bytes | None: ...

    async def blob_delete(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    api_key_id: str
    created_at: float
    #: the `response` object as the client received it
    response: dict[str, Any]
    #: input items (previous turns expanded) followed by the output items
    items: list[dict[str, Any]]


class ResponseStore:
    def __init__(
        self,
        path: Path | None,
        ttl_s: float = 30 * 86400,
        max_rows: int = 10_000,
        cache_size: int = 1024,
        remote: BlobStore | None = None,
    ) -> None:
        self._path = path
        self._remote = remote
        self._ttl = ttl_s
        self._max_rows = max_rows
        self._cache: OrderedDict[str, StoredResponse] = OrderedDict()
        self._cache_size = cache_size if path is not None or remote is not None else max_rows
        self._pending: list[StoredResponse] = []
        self._deleted: set[str] = set()
        self._wake = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._remote is not None:
            self._task = asyncio.get_running_loop().create_task(self._writer())
            return
        if self._path is None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="aisix-responses")
        await self._run(self._open)
        self._task = asyncio.get_running_loop().create_task(self._writer())

    def _open(self) -> None:
        assert self._path is not None
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._remote is not None:
            with contextlib.suppress(Exception):  # etcd down at shutdown: the cache is gone
                await self._flush()
        if self._executor is not None:
            await self._flush()
            await self._run(self._close_conn)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- API -------------------------------------------------------------------------------

    def put(self, record: StoredResponse) -> None:
        """Keep a response; returns at once (written in the background)."""
        self._remember(record)
        if self._path is not None or self._remote is not None:
            self._pending.append(record)
            self._wake.set()

    def _remember(self, record: StoredResponse) -> None:
        self._cache[record.id] = record
        self._cache.move_to_end(record.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def get(self, response_id: str, api_key_id: str) -> StoredResponse | None:
        """The response if it exists, has not expired and belongs to this key."""
        record = self._cache.get(response_id)
        if record is None and response_id not in self._deleted:
            if self._executor is not None:
                record = await self._run(self._select, response_id)
            elif self._remote is not None:
                record = await self._fetch_remote(response_id)
        if record is None or record.api_key_id != api_key_id:
            return None
        if record.created_at + self._ttl < time.time():
            return None
        return record

    async def delete(self, response_id: str, api_key_id: str) -> bool:
        record = await self.get(response_id, api_key_id)
        if record is None:
            return False
        self._cache.pop(response_id, None)
        self._pending = [r for r in self._pending if r.id != response_id]
        self._deleted.add(response_id)
        if self._executor is not None:
            await self._run(self._delete, response_id)
        elif self._remote is not None:
            await self._remote.blob_delete(_blob_name(response_id))
        return True

    # -- background writes -----------------------------------------------------------------

    async def _writer(self) -> None:
        last_prune = 0.0
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(_FLUSH_S)  # gather a batch
            try:
                await self._flush()
                if self._executor is not None and time.monotonic() - last_prune > _PRUNE_S:
                    last_prune = time.monotonic()
                    await self._run(self._prune)
            except Exception:  # a full disk or an etcd outage must not stop later writes
                log.exception("could not write stored responses")

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._remote is not None:
            ttl = max(1, int(self._ttl))
            for r in batch:
                await self._remote.blob_put(_blob_name(r.id), _encode(r), ttl)
            return
        await self._run(self._insert, batch)

    async def _fetch_remote(self, response_id: str) -> StoredResponse | None:
        assert self._remote is not None
        raw = await self._remote.blob_get(_blob_name(response_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return StoredResponse(
            data["id"], data["api_key_id"], data["created_at"], data["response"], data["items"]
        )

    def _insert(self, batch: list[StoredResponse]) -> None:
        assert self._conn is not None
        rows = [
            (
                r.id,
                r.api_key_id,
                r.created_at,
                r.created_at + self._ttl,
                orjson.dumps({"response": r.response, "items": r.items}),
            )
            for r in batch
        ]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", rows)

    def _select(self, response_id: str) -> StoredResponse | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT id, api_key_id, created_at, data FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        if row is None:
            return None
        data = orjson.loads(row[3])
        return StoredResponse(row[0], row[1], row[2], data["response"], data["items"])

    def _delete(self, response_id: str) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))

    def _prune(self) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("DELETE FROM responses WHERE expires_at < ?", (time.time(),))
            self._conn.execute(
                "DELETE FROM responses WHERE id IN (SELECT id FROM responses "
                "ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (self._max_rows,),
            )


def _blob_name(response_id: str) -> str:
    return "responses/" + response_id


def _encode(record: StoredResponse) -> bytes:
    return orjson.dumps(
        {
            "id": record.id,
            "api_key_id": record.api_key_id,
            "created_at": record.created_at,
            "response": record.response,
            "items": record.items,
        }
    )
