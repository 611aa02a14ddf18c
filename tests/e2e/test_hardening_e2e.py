"""Issue 12 through the real gateway: secrets redacted, startup checks, health endpoints,
and a bad resource isolated instead of failing every request."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml
from e2e_helpers import ALIAS, CALLER_KEY, PROVIDER_SECRET, GatewayFactory, wait_for

from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

pytestmark = pytest.mark.timeout(60)
CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}


def test_an_upstream_echoing_the_provider_secret_never_exposes_it(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway()
    gw.seed(fake_openai.url)
    echo = {"error": {"message": f"Incorrect API key provided: Bearer {PROVIDER_SECRET}"}}
    fake_openai.script(Reply(status=400, json=echo), Reply(status=401, json=echo))
    response = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert response.status == 400
    assert PROVIDER_SECRET not in response.text
    assert response.json["error"]["message"] == "Incorrect API key provided: Bearer ***"
    models = gw.status("/status/models")
    assert models.status == 200
    assert PROVIDER_SECRET not in models.text
    [entry] = [m for m in models.json if m["display_name"] == ALIAS]
    assert entry["last_error"]["message"] == "Incorrect API key provided: Bearer ***"
    admin_status = gw.admin("GET", "/models/status")
    assert admin_status.status == 200 and PROVIDER_SECRET not in admin_status.text
    gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert PROVIDER_SECRET not in gw.stdout_text() + gw.stderr_text()


def _run_serve(
    tmp_path: Path, admin: dict[str, object], free: list[int]
) -> subprocess.CompletedProcess[str]:
    config = {
        "proxy": {"addr": f"127.0.0.1:{free[0]}"},
        "admin": admin,
        "data_dir": str(tmp_path / "data"),
        "observability": {"metrics": {"prometheus": {"addr": f"127.0.0.1:{free[2]}"}}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "aisix", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_a_short_admin_key_is_refused_at_startup(
    tmp_path: Path, port_factory: Callable[[], int]
) -> None:
    free = [port_factory() for _ in range(3)]
    admin = {"addr": f"127.0.0.1:{free[1]}", "admin_keys": ["long-enough-admin-key-1", "short"]}
    result = _run_serve(tmp_path, admin, free)  # type: ignore[arg-type]
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "admin.admin_keys" in lines[0] and "16" in lines[0]
    assert "short" not in lines[0].replace("shorter", "")


def test_non_loopback_listeners_without_tls_warn_and_startup_prints_addresses(
    gateway: GatewayFactory, port_factory: Callable[[], int]
) -> None:
    gw = gateway({"admin": {"addr": f"0.0.0.0:{port_factory()}"}}, start=False)
    gw.admin_host = "127.0.0.1"
    gw.start()
    err = gw.stderr_text()
    assert "admin.addr" in err and "without TLS" in err, err
    line = next(ln for ln in err.splitlines() if "aisix listening" in ln)
    assert f"proxy http://{gw.proxy_host}:{gw.proxy_port}" in line
    assert "proxy.addr" not in line


def test_livez_and_readyz_carry_a_request_id(gateway: GatewayFactory) -> None:
    gw = gateway()
    for path in ("/livez", "/readyz"):
        response = gw.proxy("GET", path, headers={"x-request-id": "probe-123"})
        assert response.status == 200
        assert response.headers["x-aisix-request-id"] == "probe-123"
        fresh = gw.proxy("GET", path)
        assert len(fresh.headers["x-aisix-request-id"]) >= 16


def test_a_stored_budget_with_an_overflowing_limit_is_rejected_not_fatal(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    """The issue's probe: `limit_usd: 1e300` for a team nobody uses made every request 500,
    also after restart. Written past the admin API (as an old version stored it), it is now
    rejected at load, listed in /status/config, and traffic keeps flowing."""
    gw = gateway()
    gw.seed(fake_openai.url)
    gw.stop()
    value = {"name": "huge", "scope": "team", "scope_ref": "nobody", "period": "day"}
    value["limit_usd"] = 1e300  # type: ignore[assignment]
    db = sqlite3.connect(Path(gw.config["data_dir"]) / "aisix.db")
    columns = [row[1] for row in db.execute("PRAGMA table_info(resources)")]
    assert {"kind", "id", "value", "revision"} <= set(columns), columns
    db.execute(
        "INSERT INTO resources (kind, id, value, revision) VALUES (?, ?, ?, 1)",
        ("budget_policies", "huge-policy", orjson.dumps(value).decode()),
    )
    db.commit()
    db.close()
    gw.start()
    response = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert response.status == 200, response.text
    config = gw.status("/status/config").json
    rejected = {r["id"]: r["error"] for r in config["rejected"]}
    assert rejected["huge-policy"].startswith("limit_usd:")


def test_admin_health_is_degraded_only_after_the_store_outage_threshold(
    gateway: GatewayFactory, own_etcd: EtcdServer, prefix: str
) -> None:
    """Item 9: a store blip is not `degraded`; an outage longer than
    `admin.store_degraded_after_secs` (300 s by default, 4 s here) is."""
    gw = gateway(
        {
            "etcd": {"endpoints": [own_etcd.url], "prefix": prefix},
            "admin": {"store_degraded_after_secs": 4},
        }
    )

    def health() -> str:
        response = gw.admin("GET", "/health")
        assert response.status == 200, response.text
        return str(response.json["status"])

    def connected() -> bool:
        return bool(gw.status("/status/config").json["source"]["connected"])

    assert health() == "ok"
    own_etcd.stop()
    wait_for(lambda: not connected(), 10.0, "the store to be seen unreachable")
    assert health() == "ok"  # unreachable for less than the threshold
    wait_for(lambda: health() == "degraded", 15.0, "health to report degraded")
    own_etcd.start()
    wait_for(connected, 30.0, "the store to be reachable again")
    assert health() == "ok"
