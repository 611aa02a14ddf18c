"""Bootstrap configuration (`config.yaml`, contract §2): defaults → file → `AISIX_*` env.

`load_settings(path, environ)` returns a frozen, typed `Settings` or raises `ConfigError`
whose message names the bad key (`proxy.workers: ...`, `unknown key "proxy.adress"`).
Relative paths are resolved against the config file's directory. Nothing here binds,
connects or starts anything.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aisix.egress import DEFAULT_DENIED_CIDRS
from aisix.resources import format_path

ENV_PREFIX = "AISIX_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_addr(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _check_cidrs(value: list[str]) -> list[str]:
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a CIDR or IP address") from None
    return value


class TLSFiles(_Section):
    cert_file: str
    key_file: str


class RealIP(_Section):
    trusted_proxies: list[str] = Field(default_factory=list)
    header: str = "x-forwarded-for"
    recursive: bool = False

    _cidrs = field_validator("trusted_proxies")(classmethod(lambda cls, v: _check_cidrs(v)))


class ProxySettings(_Section):
    addr: str = "0.0.0.0:3000"
    workers: Annotated[int, Field(ge=1)] = 1
    request_body_limit_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    shutdown_grace_secs: Annotated[int, Field(ge=0)] = 30
    real_ip: RealIP = Field(default_factory=RealIP)
    tls: TLSFiles | None = None

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))


class AdminSettings(_Section):
    enabled: bool = True
    addr: str = "127.0.0.1:3001"
    admin_keys: list[Annotated[str, Field(min_length=1)]] | None = None
    tls: TLSFiles | None = None
    #: `GET /admin/v1/health` says `degraded` once the store has been unreachable this long
    store_degraded_after_secs: Annotated[int, Field(ge=0, le=86_400)] = 300

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))

    @model_validator(mode="after")
    def _keys_required(self) -> AdminSettings:
        if self.enabled and not self.admin_keys:
            raise ValueError("admin_keys: a non-empty list is required when admin is enabled")
        return self


class StoreSettings(_Section):
    backend: Literal["sqlite"] = "sqlite"
    path: str | None = None
    poll_interval_ms: Annotated[int, Field(gt=0)] = 250


class EtcdTLS(_Section):
    ca_cert_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None


class EtcdSettings(_Section):
    endpoints: Annotated[list[str], Field(min_length=1)]
    prefix: str = "/aisix"
    dial_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    request_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    username: str | None = None
    password: str | None = None
    tls: EtcdTLS | None = None


class RedisTLS(_Section):
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    verify: bool = True


class RedisConn(_Section):
    mode: Literal["single", "cluster", "sentinel"] = "single"
    url: str | None = None
    nodes: list[str] | None = None
    sentinels: list[str] | None = None
    master_name: str | None = None
    username: str | None = None
    password: str | None = None
    database: Annotated[int, Field(ge=0)] | None = None
    tls: RedisTLS | None = None
    socket_timeout_ms: Annotated[int, Field(gt=0)] = 1000

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisConn:
        if self.mode == "single" and not self.url:
            raise ValueError("url: required with mode single")
        if self.mode == "cluster" and not self.nodes:
            raise ValueError("nodes: required with mode cluster")
        if self.mode == "sentinel" and not (self.sentinels and self.master_name):
            raise ValueError("sentinels and master_name: required with mode sentinel")
        if self.mode == "cluster":
            raise ValueError(
                "mode: cluster is not supported (one admission spans several buckets, which a "
                "cluster shards across slots); use single or sentinel"
            )
        for address in self.sentinels or ():
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinels: {address!r} is not host:port")
        if self.mode == "single" and self.url:
            scheme = self.url.partition("://")[0].lower()
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(f"url: scheme must be redis, rediss or unix, not {scheme!r}")
        return self


class RateLimitSettings(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisConn | None = None
    concurrency_ttl_secs: Annotated[int, Field(gt=0)] = 300
    estimate_completion_tokens: Annotated[int, Field(gt=0)] = 1024
    #: what to do when Redis is unreachable: `open` (local counters) or `closed` (refuse)
    on_redis_failure: Literal["open", "closed"] = "open"

    @model_validator(mode="after")
    def _redis_required(self) -> RateLimitSettings:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("redis: required with backend redis")
        return self


class UpstreamSettings(_Section):
    timeout_ms: Annotated[int, Field(ge=0)] = 600_000
    stream_timeout_ms: Annotated[int, Field(ge=0)] = 0
    connect_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    retries: Annotated[int, Field(ge=0)] = 2
    #: most connections open at once per upstream host (0 = no limit)
    pool_size_per_host: Annotated[int, Field(ge=0)] = 0
    #: an idle keep-alive connection is closed after this long (0 = never)
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    #: egress policy for provider keys' api_base (aisix.egress): empty = every host
    allowed_hosts: list[str] = Field(default_factory=list)
    denied_cidrs: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_CIDRS))

    _cidrs = field_validator("denied_cidrs")(classmethod(lambda cls, v: _check_cidrs(v)))


class DownstreamSettings(_Section):
    sse_keepalive_interval_secs: Annotated[int, Field(ge=0)] = 15


class UsageSettings(_Section):
    #: the usage ledger writes usage rows and settled spend at least this often: the most
    #: settled spend a kill -9 can lose (issue 12 item 8)
    flush_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100
    #: usage events waiting for the writer before new ones are dropped (and counted)
    max_pending: Annotated[int, Field(ge=100, le=10_000_000)] = 10_000


class PrometheusSettings(_Section):
    enabled: bool = True
    addr: str = "127.0.0.1:9090"
    path: str = "/metrics"
    #: with proxy.workers > 1: how long a scrape waits for each worker's series
    worker_timeout_ms: Annotated[int, Field(gt=0)] = 2000

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))


class MetricsSettings(_Section):
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)


class ObservabilitySettings(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)


class Settings(_Section):
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    admin: AdminSettings
    data_dir: str = "data"
    store: StoreSettings | None = None
    etcd: EtcdSettings | None = None
    resources_file: str | None = None
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    #: directory of the config file; relative paths resolve against it (not a config key)
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        chosen = [n for n in ("store", "etcd", "resources_file") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"only one of store, etcd, resources_file may be set (got {chosen})")
        if self.proxy.workers > 1 and self.ratelimit.backend == "memory":
            raise ValueError(
                "proxy.workers > 1 requires ratelimit.backend: redis "
                "(memory counters are per process)"
            )
        return self

    def resolve(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    @property
    def sqlite_path(self) -> Path:
        if self.store is not None and self.store.path:
            return self.resolve(self.store.path)
        return self.data_path / "aisix.db"


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError naming the key."""
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        config_path = Path(path)
        try:
            text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_path}: {exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_path} must hold a mapping")
        raw = loaded or {}
        base_dir = config_path.resolve().parent
    _apply_env(raw, environ)
    if "base_dir" in raw:
        raise ConfigError('unknown key "base_dir"')
    raw.setdefault("admin", {})
    raw["base_dir"] = str(base_dir)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    path = format_path(first["loc"])
    if first["type"] == "extra_forbidden":
        return f'unknown key "{path}"'
    if first["type"] == "missing":
        return f'missing key "{path}"'
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "AISIX_CONFIG":
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = _env_value(parts[-1], value)


def _env_value(key: str, value: str) -> Any:
    """Env values stay strings (pydantic converts them where a number or bool belongs);
    lists are comma-separated or a JSON array."""
    stripped = value.strip()
    if stripped.startswith("["):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            raise ConfigError(f"environment value for {key} is not a JSON array") from None
    if key in _LIST_KEYS:
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_LIST_KEYS = frozenset(
    {
        "admin_keys",
        "endpoints",
        "trusted_proxies",
        "nodes",
        "sentinels",
        "allowed_hosts",
        "denied_cidrs",
    }
)
