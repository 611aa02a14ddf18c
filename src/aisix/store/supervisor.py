"""Keeps the published Snapshot in step with the resource store.

On start it loads every record and publishes the first snapshot; then it follows the store's
change feed and rebuilds on every change (the admin API never touches the snapshot itself).
A failed load keeps the last good snapshot serving and is reported through `status()`
(`GET /status/config`) and the reload counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aisix.loader import TargetFactory, build_snapshot
from aisix.resources import format_rfc3339
from aisix.snapshot import Snapshot, SnapshotHolder
from aisix.store.base import ResourceStore

log = logging.getLogger("aisix.supervisor")


@dataclass(slots=True)
class ReloadResult:
    successful: bool
    at: float
    error: str | None


class Supervisor:
    def __init__(
        self,
        store: ResourceStore,
        holder: SnapshotHolder,
        target_factory: TargetFactory,
        on_reload: Callable[[bool, Snapshot | None], None] | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self._target_factory = target_factory
        self._on_reload = on_reload
        self.last_reload: ReloadResult | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> Snapshot | None:
        """Load everything and publish; on failure keep the last snapshot and record why."""
        try:
            records, revision = await self.store.load_all()
            snapshot = build_snapshot(records, revision, self.holder.current, self._target_factory)
        except Exception as exc:
            log.error("resource reload failed: %s", exc)
            self.last_reload = ReloadResult(False, time.time(), str(exc))
            if self._on_reload:
                self._on_reload(False, None)
            return None
        self.holder.publish(snapshot)
        self.last_reload = ReloadResult(True, time.time(), None)
        for rejected in snapshot.rejected:
            log.warning("rejected %s %s: %s", rejected.kind, rejected.id, rejected.error)
        if self._on_reload:
            self._on_reload(True, snapshot)
        return snapshot

    def record_failure(self, error: str) -> None:
        """A reload that failed before reaching the store (e.g. an invalid resources file)."""
        self.last_reload = ReloadResult(False, time.time(), error)
        if self._on_reload:
            self._on_reload(False, None)

    async def _follow(self) -> None:
        """Follow the change feed; when it breaks, reconnect with backoff (1 s doubling to
        60 s) after a full resynchronising load. A successful resync resets the backoff."""
        backoff = 1.0
        while True:
            try:
                async for _revision in self.store.changes():
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("store watch failed (%s); retrying in %.0fs", exc, backoff)
            await asyncio.sleep(backoff)
            if await self.reload() is not None and self.store.connected():
                backoff = 1.0
            else:
                backoff = min(backoff * 2, 60.0)

    def status(self) -> dict[str, Any]:
        """`GET /status/config` (contract §11.2)."""
        snapshot = self.holder.current
        out: dict[str, Any] = {
            "state": "ready" if snapshot is not None else "loading",
            "source": {
                "type": self.store.source_type,
                "location": self.store.location,
                "connected": self.store.connected(),
            },
        }
        if snapshot is not None:
            out["snapshot"] = {
                "revision": snapshot.revision,
                "applied_at": format_rfc3339(snapshot.applied_at),
                "age_seconds": int(time.time() - snapshot.applied_at),
                "resource_counts": snapshot.counts(),
            }
            out["rejected"] = [
                {
                    "kind": r.kind,
                    "id": r.id,
                    "name": r.name,
                    "error": r.error,
                    **(
                        {"serving_stale_since": format_rfc3339(r.serving_stale_since)}
                        if r.serving_stale_since
                        else {}
                    ),
                }
                for r in snapshot.rejected
            ]
        else:
            out["rejected"] = []
        if self.last_reload is not None:
            out["last_reload"] = {
                "successful": self.last_reload.successful,
                "at": format_rfc3339(self.last_reload.at),
                "error": self.last_reload.error,
            }
        return out
