"""The PostgreSQL usage ledger: one database shared by every replica, through asyncpg.

Each batch is one transaction that first claims its id in `ledger_batches`, so a batch is
applied at most once even when replayed twice. Hourly rows and spend are upserted in key
order (two replicas never deadlock on the same rows); per-request rows go in with COPY.
When the database cannot be reached, the batch goes to the spill file (`aisix.usage.spill`)
and the writer task replays it once a connection works again; requests never wait on any
of this. Migrations run at startup under an advisory lock (replicas starting together apply
each once); if the database is down at startup they run on the first connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from aisix.usage.base import BatchingLedger, LedgerUnavailable, log
from aisix.usage.rows import REQUEST_COLUMNS, Batch
from aisix.usage.schema import (
    INSERT_AUDIT,
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION_TABLE,
    UPSERT_DAILY,
    UPSERT_HOURLY,
    UPSERT_SPEND_PG,
    UPSERT_TOTALS,
    numbered,
)
from aisix.usage.spill import SpillFile

#: pg_advisory_xact_lock key serialising migrations across replicas ("aisixusg")
MIGRATION_LOCK = 0x61697369_78757367
#: batch ids are kept this long: a batch whose commit answer was lost is replayed within the
#: outage, so a day is ample, and ids cost one row per write (every flush interval)
BATCH_IDS_KEPT_MS = 86_400_000
#: an unreachable database is logged at most this often
WARN_EVERY_S = 60.0
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)


def transient(exc: BaseException) -> bool:
    """True for failures a later retry can cure (unreachable, restarting, overloaded)."""
    if isinstance(exc, asyncpg.ClientConfigurationError):  # a bad DSN or option stays bad
        return False
    return isinstance(exc, _TRANSIENT)


class PostgresLedger(BatchingLedger):
    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        spill: SpillFile,
        *,
        timeout_s: float = 5.0,
        on_spill: Callable[[int], None] | None = None,
        on_replay: Callable[[int], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.spill = spill
        self.spilled = 0
        self.replayed = 0
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._on_spill = on_spill
        self._on_replay = on_replay
        self._pool: Any = None
        self._migrated = False
        #: one replay at a time in this process
        self._io = asyncio.Lock()
        self._warned_at = -WARN_EVERY_S
        #: after a failure, writes go straight to the spill until the writer task's probe
        #: reaches the database again (no admin write waits out a connect timeout each time)
        self._down = False

    # --- lifecycle ------------------------------------------------------------------------

    async def _open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=4,
            timeout=self._timeout_s,
            command_timeout=self._timeout_s,
        )
        try:
            async with self._connection():
                pass
        except Exception as exc:
            if not transient(exc):
                await self._close()
                raise
            self._down = True
            self._warn("unreachable at startup", exc)

    async def _close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout_s)
            except (TimeoutError, *_TRANSIENT):
                pool.terminate()

    def _connection(self) -> _Connection:
        return _Connection(self)

    async def _migrate(self, conn: Any) -> list[int]:
        applied: list[int] = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(SCHEMA_VERSION_TABLE)
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version in done:
                    continue
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_version VALUES ($1, $2)", version, _now_ms())
                applied.append(version)
        if applied:
            log.info("usage database: applied schema migrations %s", applied)
        self._migrated = True
        return applied

    # --- writes ---------------------------------------------------------------------------

    async def _write(self, batch: Batch) -> None:
        if batch.empty:
            return
        if self._down:
            await self._spill(batch)
            return
        try:  # concurrent writes are fine: upserts add up, in one key order (no deadlock)
            await self._apply(batch)
        except Exception as exc:
            if not transient(exc):
                log.exception("usage database rejected a batch; %d events lost", batch.events)
                self.count_drops(batch.events)
                return
            self._down = True
            self._warn("unreachable; spilling", exc)
            await self._spill(batch)

    async def _apply(self, batch: Batch) -> bool:
        """Write the batch in one transaction; False if it had been applied before."""
        async with self._connection() as conn, conn.transaction():
            claimed = await conn.execute(
                "INSERT INTO ledger_batches VALUES ($1, $2) ON CONFLICT DO NOTHING",
                batch.batch_id,
                _now_ms(),
            )
            if claimed.endswith(" 0"):
                return False
            if batch.hourly:
                await conn.executemany(numbered(UPSERT_HOURLY), batch.hourly)
                await conn.executemany(numbered(UPSERT_TOTALS), batch.totals)
                await conn.executemany(numbered(UPSERT_DAILY), batch.daily)
            if batch.requests:
                await conn.copy_records_to_table(
                    "usage_requests", records=batch.requests, columns=REQUEST_COLUMNS
                )
            if batch.spend:
                await conn.executemany(numbered(UPSERT_SPEND_PG), batch.spend)
            if batch.audit:
                await conn.executemany(numbered(INSERT_AUDIT), [a.values() for a in batch.audit])
        return True

    async def _spill(self, batch: Batch) -> None:
        try:
            kept = await asyncio.to_thread(self.spill.append, batch.to_line())
        except OSError:
            log.exception("usage spill file %s cannot be written", self.spill.path)
            kept = False
        if kept:
            self.spilled += batch.events
            if self._on_spill is not None:
                self._on_spill(batch.events)
            return
        log.error(
            "usage spill file %s is full (%d bytes); %d events and %d audit entries dropped",
            self.spill.path,
            self.spill.max_bytes,
            batch.events,
            len(batch.audit),
        )
        self.count_drops(batch.events)

    async def _idle(self) -> None:
        """Replay the spill file, oldest first, while the database answers."""
        if self._io.locked():
            return
        waiting = await asyncio.to_thread(self.spill.size)
        if not waiting and not self._down:
            return
        try:  # a cheap probe, so an outage does not rewrite the claimed file every interval
            async with self._connection() as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            if transient(exc):
                return
            raise
        self._down = False
        if not waiting:
            return
        async with self._io:
            lines = await asyncio.to_thread(self.spill.claim)
            remaining: list[bytes] = []
            replayed = 0
            for index, line in enumerate(lines):
                try:
                    batch = Batch.from_line(line)
                except ValueError as exc:
                    log.error("usage spill file: skipping a damaged line (%s)", exc)
                    continue
                try:
                    if await self._apply(batch):
                        replayed += batch.events
                except Exception as exc:
                    if transient(exc):
                        remaining = lines[index:]
                        break
                    log.exception("usage database rejected a spilled batch; skipped")
                    self.count_drops(batch.events)
            if replayed:  # counted before the file shrinks, so whoever sees it empty sees them
                self.replayed += replayed
                if self._on_replay is not None:
                    self._on_replay(replayed)
                log.info("usage database reachable again: replayed %d spilled events", replayed)
            if len(remaining) != len(lines):
                await asyncio.to_thread(self.spill.settle, remaining)

    # --- reads ----------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(numbered(sql), *params)
        except Exception as exc:
            if not transient(exc):
                log.exception("usage database read failed")
            raise LedgerUnavailable(f"usage database unavailable: {_describe(exc)}") from None
        return [tuple(row) for row in rows]

    async def _read_spend(self) -> dict[tuple[str, int], int]:
        try:
            rows = await self._fetch("SELECT key, period_start, nano_usd FROM spend", ())
        except LedgerUnavailable as exc:
            log.warning("budget spend not loaded (%s); memory counters start from zero", exc)
            return {}
        return {(str(key), int(start)): int(nano) for key, start, nano in rows}

    async def _prune(self, cutoff_ms: int) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute("DELETE FROM usage_requests WHERE ts_ms < $1", cutoff_ms)
                await conn.execute(
                    "DELETE FROM ledger_batches WHERE at_ms < $1", _now_ms() - BATCH_IDS_KEPT_MS
                )
        except Exception as exc:
            if not transient(exc):
                raise

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("usage database %s: %s", what, _describe(exc))


class _Connection:
    """`async with` a pooled connection, migrated on first use, acquired within the timeout."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self._ledger = ledger
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        ledger = self._ledger
        if ledger._pool is None:
            raise asyncpg.InterfaceError("the usage database pool is closed")
        self._conn = await ledger._pool.acquire(timeout=ledger._timeout_s)
        try:
            if not ledger._migrated:
                await ledger._migrate(self._conn)
        except BaseException:
            await self._release()
            raise
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._ledger._pool is not None:
            try:
                await self._ledger._pool.release(conn)
            except Exception:  # a connection the server cut: the pool replaces it
                conn.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _now_ms() -> int:
    return round(time.time() * 1000)
