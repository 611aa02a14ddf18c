"""The usage ledger: hourly aggregates, per-request rows, budget spend and the audit log,
in SQLite (default, one file per gateway) or PostgreSQL (shared by every replica).

`build_ledger(settings, ...)` picks the backend from `usage.backend`; `UsageApi` answers the
admin usage reads. `UsageStore` is the SQLite ledger under its historical name.
"""

from __future__ import annotations

from collections.abc import Callable

from aisix.settings import Settings
from aisix.usage.api import UsageApi
from aisix.usage.base import BatchingLedger, LedgerUnavailable, UsageLedger
from aisix.usage.sqlite import SqliteLedger

UsageStore = SqliteLedger

__all__ = [
    "BatchingLedger",
    "LedgerUnavailable",
    "SqliteLedger",
    "UsageApi",
    "UsageLedger",
    "UsageStore",
    "build_ledger",
]


def build_ledger(
    settings: Settings,
    on_drop: Callable[[], None] | None = None,
    on_spill: Callable[[int], None] | None = None,
    on_replay: Callable[[int], None] | None = None,
) -> BatchingLedger:
    conf = settings.usage
    options = {
        "max_pending": conf.max_pending,
        "batch_size": conf.batch_size,
        "flush_interval_s": conf.flush_interval_ms / 1000,
        "retention_days": conf.retention_days,
        "on_drop": on_drop,
    }
    if conf.backend == "postgres":
        from aisix.usage.postgres import PostgresLedger  # only PostgreSQL users import asyncpg
        from aisix.usage.spill import SpillFile

        assert conf.dsn is not None
        spill_path = settings.resolve(
            conf.spill_path or str(settings.data_path / "usage-spill.jsonl")
        )
        return PostgresLedger(
            conf.dsn,
            SpillFile(spill_path, conf.spill_max_bytes),
            timeout_s=conf.timeout_ms / 1000,
            on_spill=on_spill,
            on_replay=on_replay,
            **options,
        )
    return SqliteLedger(settings.data_path / "usage.db", **options)
