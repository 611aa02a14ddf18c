"""Bootstrap configuration (contract §2): defaults, file, environment, and startup errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisix.settings import ConfigError, Settings, load_settings

KEYS = {"AISIX_ADMIN__ADMIN_KEYS": "admin-key"}
WORKERS_MSG = (
    "proxy.workers > 1 requires ratelimit.backend: redis (memory counters are per process)"
)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_error(path: Path | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    return str(caught.value)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "admin: {admin_keys: [k]}\n"), {})
    assert (s.proxy.addr, s.proxy.workers) == ("0.0.0.0:3000", 1)
    assert s.proxy.request_body_limit_bytes == 10_485_760
    assert s.proxy.shutdown_grace_secs == 30
    assert (s.proxy.real_ip.trusted_proxies, s.proxy.real_ip.header) == ([], "x-forwarded-for")
    assert s.proxy.real_ip.recursive is False
    assert (s.admin.enabled, s.admin.addr) == (True, "127.0.0.1:3001")
    assert (s.ratelimit.backend, s.ratelimit.concurrency_ttl_secs) == ("memory", 300)
    assert s.ratelimit.estimate_completion_tokens == 1024
    up = s.upstream
    assert (up.timeout_ms, up.stream_timeout_ms, up.connect_timeout_ms, up.retries) == (
        600_000,
        0,
        5000,
        2,
    )
    assert s.downstream.sse_keepalive_interval_secs == 15
    assert (s.observability.log_level, s.observability.access_log) == ("info", True)
    prom = s.observability.metrics.prometheus
    assert (prom.enabled, prom.addr, prom.path) == (True, "127.0.0.1:9090", "/metrics")
    assert (s.store, s.etcd, s.resources_file) == (None, None, None)
    assert s.sqlite_path == tmp_path / "data" / "aisix.db"


def test_yaml_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
proxy: {addr: "0.0.0.0:8080", request_body_limit_bytes: 0, real_ip: {trusted_proxies: [10.0.0.0/8]}}
admin: {addr: "127.0.0.1:4001", admin_keys: [a, b]}
upstream: {timeout_ms: 1000}
observability: {log_level: debug, metrics: {prometheus: {enabled: false}}}
""",
    )
    s = load_settings(path, {})
    assert s.proxy.addr == "0.0.0.0:8080"
    assert s.proxy.request_body_limit_bytes == 0
    assert s.proxy.real_ip.trusted_proxies == ["10.0.0.0/8"]
    assert s.admin.admin_keys == ["a", "b"]
    assert s.upstream.timeout_ms == 1000 and s.upstream.retries == 2
    assert s.observability.log_level == "debug"
    assert s.observability.metrics.prometheus.enabled is False


def test_env_overrides_file_with_nesting(tmp_path: Path) -> None:
    path = write(tmp_path, "proxy: {addr: '0.0.0.0:8080'}\nadmin: {admin_keys: [file-key]}\n")
    env = {
        "AISIX_PROXY__ADDR": "0.0.0.0:9999",
        "AISIX_OBSERVABILITY__METRICS__PROMETHEUS__ADDR": "0.0.0.0:9191",
        "AISIX_UPSTREAM__RETRIES": "5",
        "AISIX_OBSERVABILITY__ACCESS_LOG": "false",
        "AISIX_CONFIG": str(path),
        "OTHER_VAR": "ignored",
    }
    s = load_settings(path, env)
    assert s.proxy.addr == "0.0.0.0:9999"
    assert s.observability.metrics.prometheus.addr == "0.0.0.0:9191"
    assert s.upstream.retries == 5
    assert s.observability.access_log is False
    assert s.admin.admin_keys == ["file-key"]


def test_env_lists_comma_or_json() -> None:
    s = load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": " k1, k2 ,"})
    assert s.admin.admin_keys == ["k1", "k2"]
    s = load_settings(None, {"AISIX_ADMIN__ADMIN_KEYS": '["a,b", "c"]'})
    assert s.admin.admin_keys == ["a,b", "c"]
    env = {**KEYS, "AISIX_PROXY__REAL_IP__TRUSTED_PROXIES": "10.0.0.1,192.168.0.0/16"}
    assert load_settings(None, env).proxy.real_ip.trusted_proxies == ["10.0.0.1", "192.168.0.0/16"]


def test_env_string_values_that_look_like_numbers_stay_strings() -> None:
    # `AISIX_ETCD__PASSWORD=123456` is a string key: it must not be turned into an int.
    env = {**KEYS, "AISIX_ETCD__ENDPOINTS": "http://etcd:2379", "AISIX_ETCD__PASSWORD": "123456"}
    s = load_settings(None, env)
    assert s.etcd is not None and s.etcd.password == "123456"
    assert load_settings(None, {**KEYS, "AISIX_DATA_DIR": "2024"}).data_dir == "2024"


@pytest.mark.parametrize(
    ("text", "dotted"),
    [
        ("proxy: {adress: 'x:1'}", "proxy.adress"),
        (
            "observability: {metrics: {prometheus: {port: 1}}}",
            "observability.metrics.prometheus.port",
        ),
        ("listen: 1", "listen"),
        ("base_dir: /etc", "base_dir"),
    ],
)
def test_unknown_file_key_names_dotted_key(tmp_path: Path, text: str, dotted: str) -> None:
    path = write(tmp_path, text + "\nadmin: {admin_keys: [k]}\n")
    assert f'unknown key "{dotted}"' in load_error(path, {})


@pytest.mark.parametrize(
    ("var", "dotted"),
    [
        ("AISIX_PROXY__ADRESS", "proxy.adress"),
        ("AISIX_RATELIMIT__REDIS_URL", "ratelimit.redis_url"),
        ("AISIX_BASE_DIR", "base_dir"),
    ],
)
def test_unknown_env_key_names_dotted_key(var: str, dotted: str) -> None:
    assert f'unknown key "{dotted}"' in load_error(None, {**KEYS, var: "x"})


def test_one_source_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "store: {backend: sqlite}\nresources_file: r.yaml\n")
    message = load_error(path, KEYS)
    assert "only one of" in message and "store" in message and "resources_file" in message
    env = {**KEYS, "AISIX_ETCD__ENDPOINTS": "http://e:2379", "AISIX_RESOURCES_FILE": "r.yaml"}
    assert "only one of" in load_error(None, env)


def test_workers_with_memory_counters_refused() -> None:
    assert WORKERS_MSG in load_error(None, {**KEYS, "AISIX_PROXY__WORKERS": "2"})
    env = {
        **KEYS,
        "AISIX_PROXY__WORKERS": "2",
        "AISIX_RATELIMIT__BACKEND": "redis",
        "AISIX_RATELIMIT__REDIS__URL": "redis://127.0.0.1:6379",
    }
    assert load_settings(None, env).proxy.workers == 2


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    s = load_settings(write(conf, "data_dir: state\nadmin: {admin_keys: [k]}\n"), {})
    assert s.sqlite_path == conf / "state" / "aisix.db"
    s = load_settings(write(conf, "store: {path: ./db/x.db}\nadmin: {admin_keys: [k]}\n"), {})
    assert s.sqlite_path == conf / "db" / "x.db"
    s = load_settings(write(conf, "resources_file: res.yaml\nadmin: {admin_keys: [k]}\n"), {})
    assert s.resources_file is not None
    assert s.resolve(s.resources_file) == conf / "res.yaml"
    absolute = tmp_path / "elsewhere.db"
    s = load_settings(
        write(conf, f"store: {{path: '{absolute}'}}\nadmin: {{admin_keys: [k]}}\n"), {}
    )
    assert s.sqlite_path == absolute


def test_admin_keys_required_when_admin_enabled(tmp_path: Path) -> None:
    assert "admin_keys" in load_error(None, {})
    assert "admin_keys" in load_error(write(tmp_path, "admin: {admin_keys: []}\n"), {})
    assert "admin" in load_error(write(tmp_path, "admin: {admin_keys: ['']}\n"), {})
    s = load_settings(write(tmp_path, "admin: {enabled: false}\n"), {})
    assert s.admin.enabled is False


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("proxy: {workers: 0}", "proxy.workers"),
        ("proxy: {addr: nope}", "proxy.addr"),
        ("proxy: {real_ip: {trusted_proxies: [not-an-ip]}}", "proxy.real_ip.trusted_proxies"),
        ("ratelimit: {backend: redis}", "ratelimit"),
        ("observability: {log_level: verbose}", "observability.log_level"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(write(tmp_path, text + "\nadmin: {admin_keys: [k]}\n"), {}).startswith(key)


def test_unreadable_or_non_mapping_file(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path / "missing.yaml", KEYS)
    assert "YAML" in load_error(write(tmp_path, "proxy: [unclosed"), KEYS)
    assert "mapping" in load_error(write(tmp_path, "- a\n- b\n"), KEYS)


def test_settings_are_frozen() -> None:
    s = load_settings(None, KEYS)
    assert isinstance(s, Settings)
    with pytest.raises(ValueError):
        s.proxy.workers = 3  # type: ignore[misc]
