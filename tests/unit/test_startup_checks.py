"""Startup checks (issue 12 item 6) and the store-outage clock of admin health (item 9)."""

from __future__ import annotations

import pytest

from aisix.app import check_startup
from aisix.obs.status import StoreOutage
from aisix.settings import ConfigError, load_settings

LONG = "a-long-enough-admin-key"


def test_short_admin_keys_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        check_startup(load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": f"{LONG},tiny-key"}))
    message = str(info.value)
    assert message.startswith("admin.admin_keys[1]:") and "16" in message
    assert "tiny-key" not in message
    assert check_startup(load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": "x" * 16})) == []


def test_disabled_admin_is_not_checked() -> None:
    s = load_settings(None, {"AISIX_ADMIN__ENABLED": "false", "AISIX_ADMIN__ADMIN_KEYS": "x"})
    assert check_startup(s) == []


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"AISIX_ADMIN__ADDR": "0.0.0.0:3001"}, "admin.addr"),
        ({"AISIX_ADMIN__ADDR": "::0:3001"}, "admin.addr"),
        (
            {"AISIX_OBSERVABILITY__METRICS__PROMETHEUS__ADDR": "10.0.0.1:9090"},
            "observability.metrics.prometheus.addr",
        ),
    ],
)
def test_non_loopback_listeners_without_tls_warn(env: dict[str, str], key: str) -> None:
    [warning] = check_startup(load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": LONG, **env}))
    assert warning.startswith(key) and "without TLS" in warning


def test_loopback_listeners_do_not_warn() -> None:
    env = {"AISIX_ADMIN__ADDR": "::1:3001", "AISIX_PROXY__ADDR": "0.0.0.0:3000"}
    assert check_startup(load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": LONG, **env})) == []
    localhost = {"AISIX_ADMIN__ADDR": "localhost:3001"}
    assert check_startup(load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": LONG, **localhost})) == []


def test_store_outage_counts_from_the_first_failed_observation() -> None:
    now = [100.0]
    outage = StoreOutage(lambda: now[0])
    assert outage.observe(True) == 0.0
    assert outage.observe(False) == 0.0
    now[0] = 250.0
    assert outage.observe(False) == 150.0
    now[0] = 401.0
    assert outage.observe(False) == 301.0
    assert outage.observe(True) == 0.0
    now[0] = 500.0
    assert outage.observe(False) == 0.0
