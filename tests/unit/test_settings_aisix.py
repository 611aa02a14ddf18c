"""AISIX bootstrap keys (issue 14, aisix-compat.md): accepted, validated, and the inert ones
named; a truly unknown key still fails with its name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aisix.settings import ConfigError, Settings, load_settings
from fakes.aisix_config import full_aisix_config

KEYS = {"AISIX_ADMIN__ADMIN_KEYS": "admin-key"}
BAD_RULE = {"pattern": "x", "client": "Upper"}


def load(tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path, env or {})


def error(tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config, env)
    return str(caught.value)


def test_the_full_aisix_config_loads(tmp_path: Path) -> None:
    s = load(tmp_path, full_aisix_config())
    assert s.observability.log_level == "warn" and s.observability.python_log_level == 30
    assert s.observability.uvicorn_log_level == "warning"
    assert s.observability.service_name == "aisix-edge"
    assert s.upstream.idle_timeout_ms == 30_000 and s.upstream.pool_max_idle_per_host == 32
    assert s.proxy.url_rewrites[0].name == "legacy-chat"
    assert s.observability.metrics.buckets.request_ttft == [0.05, 0.5, 5]
    assert s.inert_keys() == [
        "cache",
        "observability.metrics.otlp",
        "observability.tracing",
        "observability.metrics.buckets.guardrail_latency",
        "managed",
        "proxy.thread_per_core",
    ]


@pytest.mark.parametrize("level", ["trace", "debug", "info", "warn", "warning", "error", "WARN"])
def test_log_levels_by_aisix_and_python_names(level: str) -> None:
    s = load_settings(None, {**KEYS, "AISIX_OBSERVABILITY__LOG_LEVEL": level})
    assert s.observability.log_level == level.lower()


def test_a_config_without_aisix_keys_has_no_inert_keys() -> None:
    assert load_settings(None, KEYS).inert_keys() == []


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"proxy": {"url_rewrites": [{"match": "^/a(.*)", "rewrite": "/b$2"}]}}, "unknown capture"),
        ({"proxy": {"url_rewrites": [{"match": "x*", "rewrite": "/b"}]}}, "empty string"),
        ({"proxy": {"url_rewrites": [{"match": "(", "rewrite": "/b"}]}}, "invalid regex"),
        ({"proxy": {"url_rewrites": [{"match": "^/a", "rewrite": "/b?c"}]}}, "may not contain"),
        ({"proxy": {"request_id": {"accept_headers": ["authorization"]}}}, "may not carry"),
        ({"proxy": {"request_id": {"accept_headers": ["bad header"]}}}, "not an HTTP header"),
        ({"observability": {"metrics": {"client_type_rules": [BAD_RULE]}}}, "client"),
        ({"observability": {"metrics": {"buckets": {"request_ttft": [1, 0.5]}}}}, "ascending"),
        ({"observability": {"metrics": {"buckets": {"request_ttft": [0, 1]}}}}, "positive"),
        ({"upstream": {"tls": {"client_cert_file": "c.pem"}}}, "together"),
        ({"upstream": {"pool_idle_timeout_secs": 5, "idle_timeout_ms": 9000}}, "disagree"),
        ({"cache": {"backend": "redis"}}, "redis: required"),
        ({"resources_file": ""}, "may not be empty"),
        ({"etcd": {"endpoints": []}}, "at least one endpoint"),
        ({"etcd": {"endpoints": ["http://e:2379"], "env_id": "a/b"}}, "etcd.env_id"),
    ],
)
def test_bad_aisix_values_are_refused(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    assert message in error(tmp_path, {"admin": {"admin_keys": ["k"]}, **patch})


def test_a_typo_still_fails_with_the_key_named(tmp_path: Path) -> None:
    config = full_aisix_config()
    config["upstream"]["pool_idle_timout_secs"] = 30
    assert error(tmp_path, config) == 'unknown key "upstream.pool_idle_timout_secs"'
    config = full_aisix_config()
    config["observability"]["tracing"]["otlp"]["sampel_ratio"] = 1
    assert 'unknown key "observability.tracing.otlp.sampel_ratio"' in error(tmp_path, config)


def test_env_overrides_for_aisix_lists_and_buckets() -> None:
    env = {
        **KEYS,
        "AISIX_OBSERVABILITY__METRICS__BUCKETS__REQUEST_E2E_LATENCY": "0.01,0.1,1",
        "AISIX_PROXY__REQUEST_ID__ACCEPT_HEADERS": "X-Trace-Id",
        "AISIX_PROXY__URL_REWRITES": '[{"match": "^/old/(.*)$", "rewrite": "/v1/$1"}]',
        "AISIX_OBSERVABILITY__METRICS__CLIENT_TYPE_RULES": '[{"pattern": "^b/", "client": "bot"}]',
    }
    s = load_settings(None, env)
    assert s.observability.metrics.buckets.request_e2e_latency == [0.01, 0.1, 1.0]
    assert s.proxy.request_id.accept_headers == ["x-trace-id"]
    assert s.proxy.url_rewrites[0].rewrite == "/v1/$1"
    assert s.observability.metrics.client_type_rules[0].client == "bot"


def test_etcd_user_password_env_and_env_id() -> None:
    env = {
        **KEYS,
        "AISIX_ETCD__ENDPOINTS": "http://e:2379",
        "AISIX_ETCD__USER": "gw",
        "AISIX_ETCD__PASSWORD_ENV": "ETCD_PW",
        "AISIX_ETCD__PREFIX": "/aisix/",
        "AISIX_ETCD__ENV_ID": "prod",
        "ETCD_PW": "s3cret",
    }
    s = load_settings(None, env)
    assert s.etcd is not None
    assert (s.etcd.username, s.etcd.password) == ("gw", "s3cret")
    assert s.etcd.effective_prefix == "/aisix/prod"
    missing = {k: v for k, v in env.items() if k != "ETCD_PW"}
    with pytest.raises(ConfigError, match="ETCD_PW is not set"):
        load_settings(None, missing)


def test_managed_mode_needs_no_admin_keys_and_binds_no_admin() -> None:
    s = load_settings(None, {"AISIX_MANAGED__ENABLED": "true"})
    assert s.admin_listener_enabled is False
    assert "managed" in s.inert_keys()


def test_snapshot_cache_path_is_resolved_and_not_inert(tmp_path: Path) -> None:
    s = load(tmp_path, {"admin": {"admin_keys": ["k"]},
                        "managed": {"snapshot_cache_path": "cache/snap.json"}})  # fmt: skip
    assert s.snapshot_cache == tmp_path / "cache" / "snap.json"
    assert s.inert_keys() == []


def test_empty_etcd_block_next_to_a_resources_file_is_ignored(tmp_path: Path) -> None:
    s = load(tmp_path, {"admin": {"admin_keys": ["k"]}, "etcd": {"endpoints": []},
                        "resources_file": "r.yaml"})  # fmt: skip
    assert s.etcd is None and s.resources_file == "r.yaml"


def test_validate_cli_with_resources_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aisix.cli import main

    monkeypatch.delenv("AISIX_CONFIG", raising=False)
    good = tmp_path / "good.yaml"
    good.write_text('_format_version: "1"\nprovider_keys: [{display_name: k, secret: s}]\n')
    assert main(["validate", "--resources", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text('_format_version: "1"\nmodels: [{display_name: m, provider_key: nope}]\n')
    assert main(["validate", "--resources", str(bad)]) == 1
    assert 'models[0] ("m")' in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert "--resources" in capsys.readouterr().err


def test_aisix_sentinel_urls_and_null_workers(tmp_path: Path) -> None:
    sentinels = ["redis://10.0.0.1:26379", "redis://[::1]:26380", "10.0.0.3:26379"]
    redis = {"mode": "sentinel", "master_name": "mymaster", "sentinels": sentinels}
    config = {
        "admin": {"admin_keys": ["k"]},
        "proxy": {"workers": None},
        "ratelimit": {"backend": "redis", "redis": redis},
    }
    s = load(tmp_path, config)
    assert s.proxy.workers == 1
    assert s.ratelimit.redis is not None
    assert s.ratelimit.redis.sentinels == ["10.0.0.1:26379", "[::1]:26380", "10.0.0.3:26379"]


def test_cache_redis_may_be_a_cluster_but_counters_may_not() -> None:
    cache = {
        **KEYS,
        "AISIX_CACHE__BACKEND": "redis",
        "AISIX_CACHE__REDIS__MODE": "cluster",
        "AISIX_CACHE__REDIS__NODES": "redis://10.0.0.1:6379",
    }
    s = load_settings(None, cache)
    assert s.cache.redis is not None and s.cache.redis.mode == "cluster"
    counters = {k.replace("CACHE", "RATELIMIT"): v for k, v in cache.items()}
    with pytest.raises(ConfigError, match="cluster is not supported"):
        load_settings(None, counters)
