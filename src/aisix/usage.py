"""The usage ledger: hourly usage aggregates and durable budget spend in SQLite, plus the two
admin usage reads (contract §10.4).

`UsageStore` subscribes to `RequestFinished` events. `on_event` only appends to a bounded
in-memory batch (a full batch drops the event and counts it); a background task writes the
batches, aggregated per (hour, api_key, serving model, team), in a worker thread. It also
implements the governor's `SpendLedger` for the memory counter backend: settled spend is
summed in memory and upserted per (spend key, period start) with the same batches, and read
back at startup so spend survives restarts. `UsageApi` answers the admin reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aisix.events import RequestFinished
from aisix.limits.base import NANO_PER_USD
from aisix.limits.governor import Governor
from aisix.limits.windows import HOUR, MONTH, PERIODS, Clock, bounds
from aisix.resources import format_rfc3339, parse_rfc3339
from aisix.snapshot import Snapshot

log = logging.getLogger("aisix.usage")
#: a row SQLite cannot store (a value past its 64-bit integers, a wrong type): dropped, counted
_UNSTORABLE = (OverflowError, ValueError, TypeError, sqlite3.IntegrityError, sqlite3.DataError)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_hourly (
  hour INTEGER NOT NULL, api_key_id TEXT NOT NULL, model_id TEXT NOT NULL, team_id TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  total_tokens INTEGER NOT NULL, cost_nano_usd INTEGER NOT NULL,
  PRIMARY KEY (hour, api_key_id, model_id, team_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spend (
  key TEXT NOT NULL, period_start INTEGER NOT NULL, nano_usd INTEGER NOT NULL,
  PRIMARY KEY (key, period_start)) WITHOUT ROWID;
"""
_UPSERT_USAGE = """
INSERT INTO usage_hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, api_key_id, model_id, team_id) DO UPDATE SET
  requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens,
  total_tokens = total_tokens + excluded.total_tokens,
  cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd
"""
_UPSERT_SPEND = """
INSERT INTO spend VALUES (?, ?, ?)
ON CONFLICT (key, period_start) DO UPDATE SET nano_usd = nano_usd + excluded.nano_usd
"""
_SUMS = (
    "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(total_tokens), SUM(cost_nano_usd)"
)
_GROUP_COLUMNS = {"api_key": "api_key_id", "model": "model_id", "team": "team_id"}
#: (hour, api_key_id, model_id, team_id)
_Slot = tuple[int, str, str, str]


class UsageStore:
    def __init__(
        self,
        path: str | Path,
        *,
        max_pending: int = 10_000,
        flush_interval_s: float = 0.5,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_pending = max_pending
        self.flush_interval_s = flush_interval_s
        self.drops = 0
        self._on_drop = on_drop
        self._pending: list[RequestFinished] = []
        self._spend: dict[tuple[str, int], int] = {}
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Create the file and tables (idempotent); sync, for startup."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    async def start(self) -> None:
        await asyncio.to_thread(self.open)
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- writers (hot path: no I/O, no await) -----------------------------------------------

    def on_event(self, event: RequestFinished) -> None:
        """EventBus subscriber: counts requests admitted past limits and budgets (§10.4)."""
        if event.api_key_id is None or event.attempts <= 0:
            return
        if len(self._pending) >= self.max_pending:
            self.drops += 1
            if self._on_drop is not None:
                self._on_drop()
            return
        self._pending.append(event)
        if len(self._pending) >= self.max_pending // 2:
            self._wake.set()

    def add_spend(self, key: str, period_start: int, nano_usd: int) -> None:
        slot = (key, period_start)
        self._spend[slot] = self._spend.get(slot, 0) + nano_usd

    def load_spend(self) -> dict[tuple[str, int], int]:
        self.open()
        with self._lock:
            assert self._db is not None
            rows = self._db.execute("SELECT key, period_start, nano_usd FROM spend").fetchall()
        return {(key, start): nano for key, start, nano in rows}

    # --- batching ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any batch (issue 12 item 3)
                log.exception("usage ledger write failed; the batch is lost")

    async def flush(self) -> None:
        """Write everything pending now (also called before each admin read)."""
        events, self._pending = self._pending, []
        spend, self._spend = self._spend, {}
        if not events and not spend:
            return
        rows = _aggregate(events)
        try:
            dropped = await asyncio.to_thread(self._write, rows, spend)
        except BaseException:
            for slot, nano in spend.items():  # spend is kept for the next batch
                self._spend[slot] = self._spend.get(slot, 0) + nano
            raise
        if dropped:
            log.error("usage ledger: %d row(s) with values SQLite cannot store dropped", dropped)
            self.drops += dropped
            if self._on_drop is not None:
                for _ in range(dropped):
                    self._on_drop()

    def _write(self, rows: list[tuple[Any, ...]], spend: dict[tuple[str, int], int]) -> int:
        """One transaction for the batch; if a value cannot be stored (an integer beyond
        SQLite's 64 bits), the batch is written row by row and such rows are dropped.
        Returns how many were dropped; other failures (disk, locks) raise."""
        statements = [(_UPSERT_USAGE, row) for row in rows]
        statements += [(_UPSERT_SPEND, (k, s, n)) for (k, s), n in spend.items()]
        with self._lock:
            self.open()
            assert self._db is not None
            try:
                self._transaction(statements)
                return 0
            except _UNSTORABLE:
                pass
            dropped = 0
            for statement in statements:
                try:
                    self._transaction([statement])
                except _UNSTORABLE:
                    dropped += 1
            return dropped

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        assert self._db is not None
        self._db.execute("BEGIN")
        try:
            for sql, params in statements:
                self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        await self.flush()

        def run() -> list[tuple[Any, ...]]:
            with self._lock:
                self.open()
                assert self._db is not None
                return self._db.execute(sql, params).fetchall()

        return await asyncio.to_thread(run)


def _aggregate(events: list[RequestFinished]) -> list[tuple[Any, ...]]:
    sums: dict[_Slot, list[int]] = {}
    for ev in events:
        slot = (
            math.floor(ev.ts / HOUR) * HOUR,
            ev.api_key_id or "",
            ev.model_id or "",
            ev.team_id or "",
        )
        row = sums.setdefault(slot, [0, 0, 0, 0, 0])
        row[0] += 1
        if ev.usage is not None:
            row[1] += ev.usage.prompt_tokens
            row[2] += ev.usage.completion_tokens
            row[3] += ev.usage.total_tokens
        row[4] += round(ev.cost_usd * NANO_PER_USD)
    return [(*slot, *row) for slot, row in sums.items()]


class UsageApi:
    """`GET /admin/v1/apikeys/{id}/usage` and `GET /admin/v1/usage` as (status, JSON) pairs."""

    def __init__(self, store: UsageStore, governor: Governor | None, clock: Clock = time.time):
        self._store = store
        self._governor = governor
        self._clock = clock

    async def apikey_usage(
        self, key_id: str, query: dict[str, str], snap: Snapshot
    ) -> tuple[int, dict[str, Any]]:
        key = snap.api_keys.get(key_id)
        if key is None:
            return 404, {"error_msg": "resource not found"}
        now = self._clock()
        budget = key.value.budget
        default_from = bounds(PERIODS[budget.period] if budget else MONTH, now)[0]
        span = _time_range(query, default_from, now)
        if isinstance(span, str):
            return 400, {"error_msg": span}
        start, end = span
        rows = await self._store.query(
            f"SELECT {_SUMS} FROM usage_hourly WHERE api_key_id = ? AND hour >= ? AND hour < ?",
            (key_id, start, end),
        )
        state = None
        if self._governor is not None:
            state = await self._governor.budget_state(snap, key)
        return 200, {
            "api_key_id": key_id,
            "from": format_rfc3339(start),
            "to": format_rfc3339(end),
            **_totals(rows[0] if rows else ()),
            "budget": state,
        }

    async def usage(self, query: dict[str, str], snap: Snapshot) -> tuple[int, dict[str, Any]]:
        group_by = query.get("group_by", "api_key")
        column = _GROUP_COLUMNS.get(group_by)
        if column is None:
            return 400, {"error_msg": "group_by must be one of api_key, model, team"}
        now = self._clock()
        span = _time_range(query, bounds(MONTH, now)[0], now)
        if isinstance(span, str):
            return 400, {"error_msg": span}
        start, end = span
        found = await self._store.query(
            f"SELECT {column}, {_SUMS} FROM usage_hourly WHERE hour >= ? AND hour < ? "
            f"GROUP BY {column}",
            (start, end),
        )
        rows = []
        for value, *sums in found:
            row: dict[str, Any] = {"key": value or None}
            if group_by != "team":
                row["display_name"] = _display_name(snap, group_by, value)
            rows.append({**row, **_totals(tuple(sums))})
        rows.sort(key=lambda r: (-r["cost_usd"], r["key"] or ""))
        return 200, {
            "group_by": group_by,
            "from": format_rfc3339(start),
            "to": format_rfc3339(end),
            "rows": rows,
        }


def _time_range(query: dict[str, str], default_from: float, now: float) -> tuple[int, int] | str:
    """Hour-aligned `[from, to)`, or the 400 message."""
    try:
        start = parse_rfc3339(query["from"]).timestamp() if "from" in query else default_from
        end = parse_rfc3339(query["to"]).timestamp() if "to" in query else now
    except ValueError:
        return "from and to must be RFC 3339 timestamps"
    if start > end:
        return "from must not be after to"
    first = math.floor(start / HOUR) * HOUR
    return first, max(math.ceil(end / HOUR) * HOUR, first + HOUR)


def _totals(sums: tuple[Any, ...]) -> dict[str, Any]:
    requests, prompt, completion, total, nano = (int(v or 0) for v in (*sums, 0, 0, 0, 0, 0)[:5])
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cost_usd": nano / NANO_PER_USD,
    }


def _display_name(snap: Snapshot, group_by: str, value: str) -> str | None:
    if group_by == "api_key":
        key = snap.api_keys.get(value)
        return key.value.display_name if key is not None else None
    model = snap.models_by_id.get(value)
    return model.alias if model is not None else None
