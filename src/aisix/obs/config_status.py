"""`GET /status/config` in AISIX's shape, as a superset of aisix's own (contract §11.2).

`ConfigStatus` follows the supervisor's reloads (`on_reload`: apply sequence, config hash of
the applied records) and renders the JSON from the supervisor, the store and the current
snapshot: `state` (`synced`, `degraded`, `out_of_sync`, `empty`, `never_loaded`), `source`,
`applied`, `last_reload`, `last_failure` (sticky), `rejected`, `partially_compatible`, plus
aisix's `snapshot` block. Nothing here runs on the request path.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from aisix.resources import format_rfc3339
from aisix.snapshot import Rejected, Snapshot, SnapshotHolder
from aisix.store.base import ResourceStore
from aisix.store.supervisor import ReloadResult, Supervisor


def config_hash(snapshot: Snapshot) -> str:
    """SHA-256 over the applied records in a canonical order (kind, id, sorted value)."""
    digest = hashlib.sha256()
    for kind in sorted(snapshot.records):
        for resource_id in sorted(snapshot.records[kind]):
            record = snapshot.records[kind][resource_id]
            digest.update(f"{kind}/{resource_id}\n".encode())
            digest.update(orjson.dumps(record.value, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def error_kind(rejected: Rejected) -> str:
    error = rejected.error
    if "not a JSON object" in error:
        return "non_json"
    if "does not exist" in error or "is not a single-target model" in error:
        return "reference_failed"
    if "already in use" in error:
        return "conflict"
    return "schema_failed"


def _failure(result: ReloadResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "at": format_rfc3339(result.at),
        "last_error_kind": result.error_kind or "validate",
        "last_error": result.error,
    }


class ConfigStatus:
    def __init__(self, supervisor: Supervisor, store: ResourceStore, holder: SnapshotHolder):
        self.supervisor = supervisor
        self.store = store
        self.holder = holder
        self.apply_seq = 0
        self.hash: str | None = None

    def on_reload(self, ok: bool, snapshot: Snapshot | None) -> None:
        if ok and snapshot is not None:
            self.apply_seq += 1
            self.hash = config_hash(snapshot)

    def state(self) -> str:
        snapshot = self.holder.current
        if snapshot is None:
            return "never_loaded"
        last = self.supervisor.last_reload
        if last is not None and not last.successful and last.error_kind == "validate":
            return "out_of_sync"
        if snapshot.rejected or self.supervisor.serving_cache or not self.store.connected():
            return "degraded"
        if not any(snapshot.counts().values()):
            return "empty"
        return "synced"

    def render(self) -> dict[str, Any]:
        supervisor, snapshot = self.supervisor, self.holder.current
        source: dict[str, Any] = {
            "type": self.store.source_type,
            "location": self.store.location,
            "connected": self.store.connected(),
            "observed_revision": supervisor.observed_revision,
            "serving_cache": supervisor.serving_cache,
        }
        if supervisor.last_success_at is not None:
            source["observed_at"] = format_rfc3339(supervisor.last_success_at)
        out: dict[str, Any] = {"state": self.state(), "source": source}
        if snapshot is not None:
            counts = snapshot.counts()
            applied_at = format_rfc3339(snapshot.applied_at)
            out["applied"] = {
                "applied_revision": snapshot.revision,
                "config_hash": self.hash,
                "apply_seq": self.apply_seq,
                "applied_at": applied_at,
                "resource_counts": counts,
            }
            out["snapshot"] = {
                "revision": snapshot.revision,
                "applied_at": applied_at,
                "age_seconds": int(time.time() - snapshot.applied_at),
                "resource_counts": counts,
            }
        last = supervisor.last_reload
        if last is not None:
            out["last_reload"] = {
                "successful": last.successful,
                "at": format_rfc3339(last.at),
                "error": last.error,
            }
        out["last_failure"] = _failure(supervisor.last_failure)
        out["rejected"] = [self._rejected(r) for r in snapshot.rejected] if snapshot else []
        out["partially_compatible"] = [
            {"kind": kind, "resource_kind": kind, "field": field, "count": count}
            for kind, field, count in (snapshot.partially_compatible if snapshot else ())
        ]
        return out

    @staticmethod
    def _rejected(r: Rejected) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": r.kind,
            "id": r.id,
            "name": r.name,
            "error": r.error,
            "resource_kind": r.kind,
            "resource_id": r.id,
            "last_error_kind": error_kind(r),
            "last_error": r.error,
        }
        if r.serving_stale_since:
            entry["serving_stale_since"] = format_rfc3339(r.serving_stale_since)
            entry["serving_stale_age_seconds"] = int(time.time() - r.serving_stale_since)
        return entry
