"""The usage ledger protocol and the batching every backend shares.

A ledger subscribes to `RequestFinished` events and implements the governor's `SpendLedger`
(memory counter mode). `on_event` and `add_spend` only append in memory (a full queue drops
the event and counts it); a background task writes batches every `flush_interval_s` or as
soon as `batch_size` events wait, and prunes per-request rows past the retention. Backends
(`sqlite`, `postgres`) supply `_open`, `_write`, `_fetch`, `_read_spend` and `_prune`; reads
go through `query` (SQL with `?` placeholders), which first writes what is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aisix.events import RequestFinished
from aisix.limits.layers import MAX_NANO_USD
from aisix.usage.rows import AuditRow, Batch, build_batch

log = logging.getLogger("aisix.usage")
DAY_MS = 86_400_000
#: per-request rows are pruned this often (and once at startup)
PRUNE_INTERVAL_S = 3600.0


class LedgerUnavailable(RuntimeError):
    """The usage database cannot answer a read (admin 503)."""


class UsageLedger(Protocol):
    """What the gateway, the governor and the admin reads need from a ledger."""

    backend: str
    drops: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def on_event(self, event: RequestFinished) -> None: ...

    def add_spend(self, key: str, period_start: int, nano_usd: int) -> None: ...

    def load_spend(self) -> dict[tuple[str, int], int]: ...

    async def flush(self) -> None: ...

    async def record_audit(self, row: AuditRow) -> None: ...

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of one read (`?` placeholders); raise LedgerUnavailable when it cannot."""
        ...


class BatchingLedger:
    """The in-memory queue and the writer task; subclasses do the I/O."""

    backend = "none"

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        retention_days: int = 30,
        on_drop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_pending = max_pending
        self.batch_size = min(batch_size, max_pending)
        self.flush_interval_s = flush_interval_s
        self.retention_days = retention_days
        self.drops = 0
        self._on_drop = on_drop
        self._clock = clock
        self._pending: list[RequestFinished] = []
        self._spend: dict[tuple[str, int], int] = {}
        self._spend_at_start: dict[tuple[str, int], int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()
        self._next_prune = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._open()
        self._spend_at_start = await self._read_spend()
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for write in list(self._writes):  # writes a cancelled flush left running
            with contextlib.suppress(Exception):
                await write
        try:
            await self.flush()
        finally:
            await self._close()

    # --- writers (hot path: no I/O, no await) ---------------------------------------------

    def on_event(self, event: RequestFinished) -> None:
        """EventBus subscriber: counts requests admitted past limits and budgets (§10.4)."""
        if event.api_key_id is None or event.attempts <= 0:
            return
        if len(self._pending) >= self.max_pending:
            self.count_drops(1)
            return
        self._pending.append(event)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def add_spend(self, key: str, period_start: int, nano_usd: int) -> None:
        slot = (key, period_start)
        total = self._spend.get(slot, 0) + nano_usd
        self._spend[slot] = total if total < MAX_NANO_USD else MAX_NANO_USD

    def load_spend(self) -> dict[tuple[str, int], int]:
        """Spend as read at `start` (the governor reads it once, when it is built)."""
        return dict(self._spend_at_start)

    def count_drops(self, events: int) -> None:
        self.drops += events
        if self._on_drop is not None:
            for _ in range(events):
                self._on_drop()

    # --- batching -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
                await self._idle()
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
                    cutoff = round(self._clock() * 1000) - self.retention_days * DAY_MS
                    await self._prune(cutoff)
            except Exception:
                log.exception("usage ledger background work failed")

    async def flush(self) -> None:
        """Write everything pending now (also called before each admin read)."""
        events, self._pending = self._pending, []
        spend, self._spend = self._spend, {}
        if not events and not spend:
            return
        # the backend keeps spend it could not write for the next batch (and spills or counts
        # the events). The write runs as its own task: a cancelled flush (shutdown) leaves it
        # to finish, and `close` waits for it before closing the database under it
        batch = build_batch(events, spend, keep_requests=self.retention_days > 0)
        write = asyncio.ensure_future(self._write(batch))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await asyncio.shield(write)

    async def record_audit(self, row: AuditRow) -> None:
        await self._write(Batch(audit=[row]))

    async def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            await self.flush()
        except Exception:  # the read still answers from what was written
            log.exception("usage ledger write before a read failed")
        return await self._fetch(sql, params)

    # --- backend hooks --------------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _write(self, batch: Batch) -> None:
        """Apply the batch; a backend that cannot keeps it (spill) or counts it dropped."""
        raise NotImplementedError

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _read_spend(self) -> dict[tuple[str, int], int]:
        raise NotImplementedError

    async def _prune(self, cutoff_ms: int) -> None:
        raise NotImplementedError

    async def _idle(self) -> None:
        """Background chance to catch up (the PostgreSQL ledger replays its spill file)."""
