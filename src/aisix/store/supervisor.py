"""Keeps the published Snapshot in step with the resource store.

On start it loads every record and publishes the first snapshot; then it follows the store's
change feed and rebuilds on every change (the admin API never touches the snapshot itself).
A failed load keeps the last good snapshot serving and is reported through `last_reload`,
`last_failure` (sticky) and the reload counters (`aisix.obs.config_status` renders
`GET /status/config`). A store that cannot be reached at boot is not fatal: the supervisor
keeps retrying every `boot_retry_s` until the first snapshot (or one from the snapshot
cache, `adopt`) is published, so the gateway serves 503 `never_loaded` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aisix.loader import TargetFactory, build_snapshot
from aisix.snapshot import Snapshot, SnapshotHolder
from aisix.store.base import ResourceStore

log = logging.getLogger("aisix.supervisor")


@dataclass(slots=True)
class ReloadResult:
    successful: bool
    at: float
    error: str | None
    #: `fetch` (the store could not be read) or `validate` (a load that was refused)
    error_kind: str | None = None


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
        self.last_failure: ReloadResult | None = None
        self.last_success_at: float | None = None
        #: the published snapshot came from the on-disk cache, not (yet) from the store
        self.serving_cache = False
        #: the store revision seen by the last successful read
        self.observed_revision: int | None = None
        self.boot_retry_s = 1.0
        self._tolerant = bool(getattr(store, "tolerates_unknown_fields", False))
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
        except Exception as exc:
            self._failed(str(exc), "fetch")
            return None
        self.observed_revision = revision
        try:
            snapshot = build_snapshot(
                records, revision, self.holder.current, self._target_factory, self._tolerant
            )
        except Exception as exc:
            self._failed(str(exc), "validate")
            return None
        self.holder.publish(snapshot)
        self.serving_cache = False
        self.last_reload = ReloadResult(True, time.time(), None)
        self.last_success_at = self.last_reload.at
        for rejected in snapshot.rejected:
            log.warning("rejected %s %s: %s", rejected.kind, rejected.id, rejected.error)
        if self._on_reload:
            self._on_reload(True, snapshot)
        return snapshot

    def _failed(self, error: str, kind: str) -> None:
        log.error("resource reload failed: %s", error)
        self.record_failure(error, kind)

    def record_failure(self, error: str, kind: str = "validate") -> None:
        """A reload that failed (also one refused before reaching the store, e.g. an invalid
        resources file)."""
        self.last_reload = self.last_failure = ReloadResult(False, time.time(), error, kind)
        if self._on_reload:
            self._on_reload(False, None)

    def adopt(self, snapshot: Snapshot) -> None:
        """Serve a snapshot rebuilt from the on-disk cache until the store answers."""
        self.holder.publish(snapshot)
        self.serving_cache = True
        if self._on_reload:
            self._on_reload(True, snapshot)

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
            # until the store has delivered a snapshot, retry at the boot pace
            fresh = self.holder.current is not None and not self.serving_cache
            await asyncio.sleep(backoff if fresh else min(backoff, self.boot_retry_s))
            if await self.reload() is not None and self.store.connected():
                backoff = 1.0
            else:
                backoff = min(backoff * 2, 60.0)
