"""The usage ledger's tables and its versioned migrations, for SQLite and PostgreSQL.

Both backends hold the same tables: `usage_hourly` (aggregates with a latency histogram, and
its rollups `usage_hourly_all` over every dimension and `usage_daily` per UTC day),
`usage_requests` (one row per request, pruned after `usage.retention_days`), `spend` (budget
spend of the memory counter backend), `audit_log` (admin writes) and `schema_version`.
Migrations are numbered; each runs once, in one transaction, and records its number.
SQL is written once with `?` placeholders; `numbered` rewrites it for PostgreSQL (`$1`).
"""

from __future__ import annotations

from functools import cache

from aisix.limits.layers import MAX_NANO_USD
from aisix.usage.rows import (
    DAILY_COLUMNS,
    DIMENSIONS,
    HIST_COLUMNS,
    HOURLY_COLUMNS,
    HOURLY_SUMS,
    TOTALS_COLUMNS,
)


def _hourly_table(name: str, integer: str, suffix: str) -> str:
    dims = ", ".join(f"{d} TEXT NOT NULL" for d in DIMENSIONS)
    sums = ", ".join(f"{s} {integer} NOT NULL DEFAULT 0" for s in (*HOURLY_SUMS, *HIST_COLUMNS))
    key = ", ".join(("hour", *DIMENSIONS))
    return (
        f"CREATE TABLE {name} (hour {integer} NOT NULL, {dims}, {sums}, "
        f"PRIMARY KEY ({key})){suffix};\n"
    )


def _totals_table(integer: str) -> str:
    sums = ", ".join(f"{s} {integer} NOT NULL DEFAULT 0" for s in (*HOURLY_SUMS, *HIST_COLUMNS))
    return f"CREATE TABLE usage_hourly_all (hour {integer} PRIMARY KEY, {sums});\n"


def _daily_table(integer: str, suffix: str) -> str:
    dims = ", ".join(f"{d} TEXT NOT NULL" for d in DIMENSIONS)
    sums = ", ".join(f"{s} {integer} NOT NULL DEFAULT 0" for s in HOURLY_SUMS)
    key = ", ".join(("day", *DIMENSIONS))
    return (
        f"CREATE TABLE usage_daily (day {integer} NOT NULL, {dims}, {sums}, "
        f"PRIMARY KEY ({key})){suffix};\n"
    )


def _common_tables(integer: str, real: str) -> str:
    dims = ", ".join(f"{d} TEXT NOT NULL" for d in DIMENSIONS)
    # per-request rows are only read by time range (a minute series spans at most 2,000
    # minutes), so one index keeps their writes cheap; aggregates are read by dimension too
    indexes = "".join(
        f"CREATE INDEX usage_hourly_{d} ON usage_hourly ({d}, hour);\n" for d in DIMENSIONS
    )
    return (
        _totals_table(integer)
        + f"CREATE TABLE usage_requests (ts_ms {integer} NOT NULL, event_id TEXT NOT NULL, {dims}, "
        f"status {integer} NOT NULL, error {integer} NOT NULL, "
        f"prompt_tokens {integer} NOT NULL, completion_tokens {integer} NOT NULL, "
        f"total_tokens {integer} NOT NULL, cost_nano_usd {integer} NOT NULL, "
        f"latency_ms {real} NOT NULL, lat_bucket {integer} NOT NULL);\n"
        "CREATE INDEX usage_requests_ts ON usage_requests (ts_ms);\n"
        f"{indexes}"
        f"CREATE TABLE audit_log (id TEXT PRIMARY KEY, at_ms {integer} NOT NULL, "
        "actor TEXT NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL, "
        "resource_id TEXT NOT NULL, diff TEXT NOT NULL);\n"
        "CREATE INDEX audit_log_at ON audit_log (at_ms);\n"
        "CREATE INDEX audit_log_kind ON audit_log (kind, at_ms);\n"
        "CREATE INDEX audit_log_resource ON audit_log (resource_id, at_ms);\n"
    )


#: SQLite: 1 is the ledger as it was before versioning (created if missing, so files written
#: by older versions adopt it unchanged); 2 adds the provider key dimension, errors, latency
#: histograms, per-request rows and the audit log, copying the old aggregates over
SQLITE_MIGRATIONS: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS usage_hourly (hour INTEGER NOT NULL, api_key_id TEXT NOT NULL, "
    "model_id TEXT NOT NULL, team_id TEXT NOT NULL, requests INTEGER NOT NULL, "
    "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
    "total_tokens INTEGER NOT NULL, cost_nano_usd INTEGER NOT NULL, "
    "PRIMARY KEY (hour, api_key_id, model_id, team_id)) WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS spend (key TEXT NOT NULL, period_start INTEGER NOT NULL, "
    "nano_usd INTEGER NOT NULL, PRIMARY KEY (key, period_start)) WITHOUT ROWID;\n",
    _hourly_table("usage_hourly_v2", "INTEGER", " WITHOUT ROWID")
    + "INSERT INTO usage_hourly_v2 (hour, api_key_id, model_id, team_id, provider_key_id, "
    "requests, prompt_tokens, completion_tokens, total_tokens, cost_nano_usd) "
    "SELECT hour, api_key_id, model_id, team_id, '', requests, prompt_tokens, "
    "completion_tokens, total_tokens, cost_nano_usd FROM usage_hourly;\n"
    "DROP TABLE usage_hourly;\n"
    "ALTER TABLE usage_hourly_v2 RENAME TO usage_hourly;\n"
    + _common_tables("INTEGER", "REAL")
    + _daily_table("INTEGER", " WITHOUT ROWID")
    + f"INSERT INTO usage_daily ({', '.join(DAILY_COLUMNS)}) SELECT hour - hour % 86400, "
    + ", ".join(DIMENSIONS)
    + ", "
    + ", ".join(f"SUM({c})" for c in HOURLY_SUMS)
    + f" FROM usage_hourly GROUP BY hour - hour % 86400, {', '.join(DIMENSIONS)};\n"
    + f"INSERT INTO usage_hourly_all ({', '.join(TOTALS_COLUMNS)}) SELECT hour, "
    + ", ".join(f"SUM({c})" for c in TOTALS_COLUMNS[1:])
    + " FROM usage_hourly GROUP BY hour;\n",
)

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    _hourly_table("usage_hourly", "BIGINT", "")
    + _common_tables("BIGINT", "DOUBLE PRECISION")
    + _daily_table("BIGINT", "")
    + "CREATE TABLE spend (key TEXT NOT NULL, period_start BIGINT NOT NULL, "
    "nano_usd BIGINT NOT NULL, PRIMARY KEY (key, period_start));\n"
    "CREATE TABLE ledger_batches (batch_id TEXT PRIMARY KEY, at_ms BIGINT NOT NULL);\n"
    "CREATE INDEX ledger_batches_at ON ledger_batches (at_ms);\n",
)

SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)"
)

UPSERT_HOURLY = (
    f"INSERT INTO usage_hourly ({', '.join(HOURLY_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in HOURLY_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(('hour', *DIMENSIONS))}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_hourly.{c} + excluded.{c}" for c in (*HOURLY_SUMS, *HIST_COLUMNS))
)
UPSERT_TOTALS = (
    f"INSERT INTO usage_hourly_all ({', '.join(TOTALS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in TOTALS_COLUMNS)}) ON CONFLICT (hour) DO UPDATE SET "
    + ", ".join(f"{c} = usage_hourly_all.{c} + excluded.{c}" for c in TOTALS_COLUMNS[1:])
)
UPSERT_DAILY = (
    f"INSERT INTO usage_daily ({', '.join(DAILY_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in DAILY_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(('day', *DIMENSIONS))}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in HOURLY_SUMS)
)
#: spend saturates at MAX_NANO_USD (2^62) without an intermediate sum past 64 bits (SQLite
#: would turn it into a float, PostgreSQL raise): LEAST(old, cap - add) + add
_SPEND_SQL = (
    "INSERT INTO spend (key, period_start, nano_usd) VALUES (?, ?, ?) "
    "ON CONFLICT (key, period_start) DO UPDATE SET nano_usd = "
    "{least}(spend.nano_usd, " + str(MAX_NANO_USD) + " - excluded.nano_usd) + excluded.nano_usd"
)
UPSERT_SPEND = _SPEND_SQL.format(least="MIN")  # SQLite's two-argument MIN is a scalar
UPSERT_SPEND_PG = _SPEND_SQL.format(least="LEAST")
INSERT_AUDIT = (
    "INSERT INTO audit_log (id, at_ms, actor, action, kind, resource_id, diff) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)


@cache
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (our SQL has no `?` in literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)
