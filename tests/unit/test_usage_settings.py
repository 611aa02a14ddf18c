"""The `usage` settings section: defaults, the PostgreSQL DSN rule, environment overrides."""

from __future__ import annotations

import pytest

from aisix.settings import ConfigError, load_settings

KEYS = {"AISIX_ADMIN__ADMIN_KEYS": "admin-key"}


def test_defaults_are_the_sqlite_ledger() -> None:
    usage = load_settings(None, KEYS).usage
    assert (usage.backend, usage.dsn, usage.retention_days) == ("sqlite", None, 30)
    assert (usage.batch_size, usage.max_pending, usage.flush_interval_ms) == (1000, 10_000, 100)
    assert (usage.spill_path, usage.spill_max_bytes, usage.timeout_ms) == (None, 64 << 20, 5000)


def test_postgres_needs_a_dsn_and_reads_it_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="usage: dsn: required with backend postgres"):
        load_settings(None, {**KEYS, "AISIX_USAGE__BACKEND": "postgres"})
    env = {**KEYS, "AISIX_USAGE__BACKEND": "postgres", "AISIX_USAGE__DSN": "postgresql://db/x"}
    assert load_settings(None, env).usage.dsn == "postgresql://db/x"
    bad = {**KEYS, "AISIX_USAGE__BACKEND": "postgres", "AISIX_USAGE__DSN": "mysql://u:pw@db/x"}
    with pytest.raises(ConfigError) as caught:
        load_settings(None, bad)
    assert str(caught.value) == "usage: dsn: must be a postgresql:// (or postgres://) URL"
    with pytest.raises(ConfigError, match=r"usage\.retention_days"):
        load_settings(None, {**KEYS, "AISIX_USAGE__RETENTION_DAYS": "-1"})
    with pytest.raises(ConfigError, match=r'unknown key "usage\.backnd"'):
        load_settings(None, {**KEYS, "AISIX_USAGE__BACKND": "postgres"})
