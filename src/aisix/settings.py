"""Bootstrap configuration (`config.yaml`, contract §2): defaults → file → `AISIX_*` env.

`load_settings(path, environ)` returns a frozen, typed `Settings` or raises `ConfigError`
whose message names the bad key (`proxy.workers: ...`, `unknown key "proxy.adress"`).
Every AISIX bootstrap key is accepted (the AISIX-only sections live in
`aisix.settings_compat`, Redis connections in `aisix.settings_redis`);
`Settings.inert_keys()` names the accepted keys that have no effect yet, for the one startup
warning. Relative paths are resolved against the config file's directory. Nothing here binds,
connects or starts anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aisix.egress import DEFAULT_DENIED_CIDRS
from aisix.resources import format_path
from aisix.settings_compat import (
    BucketSettings,
    CacheBackend,
    ClientTypeRule,
    ManagedSettings,
    OtlpSettings,
    OutboundTLS,
    RequestIdSettings,
    Section,
    ShutdownSettings,
    TracingSettings,
    UrlRewrite,
)
from aisix.settings_redis import CacheRedisConn
from aisix.settings_redis import RedisConn as RedisConn  # re-exported: the counters use it
from aisix.settings_redis import RedisTLS as RedisTLS

ENV_PREFIX = "AISIX_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


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


class TLSFiles(Section):
    cert_file: str
    key_file: str


class RealIP(Section):
    trusted_proxies: list[str] = Field(default_factory=list)
    header: str = "x-forwarded-for"
    recursive: bool = False

    _cidrs = field_validator("trusted_proxies")(classmethod(lambda cls, v: _check_cidrs(v)))


class CorsSettings(Section):
    """Cross-origin access to the proxy, for browser clients such as the dashboard's Playground.

    Off when `allow_origins` is empty: then the proxy sends no CORS headers at all."""

    allow_origins: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    max_age_secs: Annotated[int, Field(ge=0, le=86400)] = 600

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin like http://127.0.0.1:3001 or *")
        return value


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\[\]:-]+$")


class ProxySettings(Section):
    @model_validator(mode="before")
    @classmethod
    def _null_workers(cls, data: Any) -> Any:
        """AISIX's `workers: null` means "the default"."""
        if isinstance(data, dict) and "workers" in data and data["workers"] is None:
            data = {k: v for k, v in data.items() if k != "workers"}
        return data

    addr: str = "0.0.0.0:3000"
    workers: Annotated[int, Field(ge=1)] = 1
    request_body_limit_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    #: multipart uploads (audio transcriptions/translations) and passthrough request bodies
    upload_body_limit_bytes: Annotated[int, Field(ge=0)] = 25 * 1024 * 1024
    shutdown_grace_secs: Annotated[int, Field(ge=0)] = 30
    real_ip: RealIP = Field(default_factory=RealIP)
    tls: TLSFiles | None = None
    request_id: RequestIdSettings = Field(default_factory=RequestIdSettings)
    url_rewrites: Annotated[list[UrlRewrite], Field(max_length=256)] = Field(default_factory=list)
    #: AISIX's thread-per-core runtime switch; aisix scales with `workers` processes instead
    thread_per_core: bool | None = None
    cors: CorsSettings = Field(default_factory=CorsSettings)

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))


class AdminUISettings(Section):
    """The dashboard at `/ui` on the admin listener."""

    enabled: bool = True
    #: the proxy as browsers reach it (Playground); default: the page's host, proxy.addr's port
    proxy_url: Annotated[str, Field(pattern=r"^https?://[^/?#\s]+/?$")] | None = None


class AdminSettings(Section):
    enabled: bool = True
    addr: str = "127.0.0.1:3001"
    admin_keys: list[Annotated[str, Field(min_length=1)]] | None = None
    tls: TLSFiles | None = None
    ui: AdminUISettings = Field(default_factory=AdminUISettings)
    #: `GET /admin/v1/health` says `degraded` once the store has been unreachable this long
    store_degraded_after_secs: Annotated[int, Field(ge=0, le=86_400)] = 300

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))


class StoreSettings(Section):
    backend: Literal["sqlite"] = "sqlite"
    path: str | None = None
    poll_interval_ms: Annotated[int, Field(gt=0)] = 250


class EtcdTLS(Section):
    ca_cert_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None
    #: TLS server name to verify (SNI) instead of the endpoint's host
    domain_name: str | None = None


_ENV_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EtcdSettings(Section):
    endpoints: list[str]
    prefix: str = "/aisix"
    #: AISIX environment id: the effective prefix becomes `<prefix>/<env_id>`
    env_id: str = ""
    dial_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    request_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    #: `user` is AISIX's name for it
    username: str | None = Field(default=None, validation_alias=AliasChoices("username", "user"))
    password: str | None = None
    #: name of the environment variable holding the password (AISIX); read at load
    password_env: str | None = None
    tls: EtcdTLS | None = None

    @field_validator("env_id")
    @classmethod
    def _env_id(cls, value: str) -> str:
        if value and not _ENV_ID.match(value):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
        return value

    @model_validator(mode="after")
    def _password_once(self) -> EtcdSettings:
        if self.password is not None and self.password_env is not None:
            raise ValueError("only one of password, password_env may be set")
        return self

    @property
    def effective_prefix(self) -> str:
        root = self.prefix.rstrip("/")
        return f"{root}/{self.env_id}" if self.env_id else root


class RateLimitSettings(Section):
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


class UpstreamProxy(Section):
    """Egress proxy for upstream calls (opt-in): an explicit `url`, or the environment's
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY when `from_env`; hosts in `no_proxy` go direct."""

    from_env: bool = False
    url: str | None = None
    no_proxy: list[str] = Field(default_factory=list)
    #: only provider keys with `egress_proxy: true` use the proxy (else all but `false` ones)
    only_opted_in: bool = False

    @field_validator("url")
    @classmethod
    def _http_proxy(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme.lower() != "http" or not parts.hostname:
                raise ValueError("must be http://[user:pass@]host:port")
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ValueError("must be http://[user:pass@]host:port") from None
        return value


class CacheSettings(Section):
    """AISIX's response-cache backends: accepted and validated, no effect yet."""

    backend: CacheBackend = "memory"
    redis: CacheRedisConn | None = None

    @model_validator(mode="after")
    def _redis_required(self) -> CacheSettings:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("redis: required with backend redis")
        return self


class UpstreamSettings(Section):
    timeout_ms: Annotated[int, Field(ge=0)] = 600_000
    stream_timeout_ms: Annotated[int, Field(ge=0)] = 0
    connect_timeout_ms: Annotated[int, Field(gt=0)] = 5000
    retries: Annotated[int, Field(ge=0)] = 2
    #: most connections open at once per upstream host (0 = no limit)
    pool_size_per_host: Annotated[int, Field(ge=0)] = 0
    #: an idle keep-alive connection is closed after this long (0 = never)
    idle_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    #: a non-streamed upstream body larger than this fails with 502 (0 = no limit)
    max_response_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024
    #: caps on an upstream response head
    max_header_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    max_headers: Annotated[int, Field(gt=0)] = 100
    proxy: UpstreamProxy = Field(default_factory=UpstreamProxy)
    #: AISIX's name for idle_timeout_ms, in seconds; either may be given (equal if both)
    pool_idle_timeout_secs: Annotated[int, Field(ge=0)] | None = None
    #: most idle keep-alive connections kept per upstream host (None = no cap)
    pool_max_idle_per_host: Annotated[int, Field(ge=0)] | None = None
    #: TCP keep-alive on upstream sockets: idle seconds before the first probe (0 = off),
    #: seconds between probes, unanswered probes before the connection is dropped
    tcp_keepalive_secs: Annotated[int, Field(ge=0)] = 60
    tcp_keepalive_interval_secs: Annotated[int, Field(gt=0)] = 30
    tcp_keepalive_retries: Annotated[int, Field(gt=0, le=255)] = 5
    #: trust and client certificates for every upstream TLS handshake
    tls: OutboundTLS = Field(default_factory=OutboundTLS)

    @model_validator(mode="before")
    @classmethod
    def _pool_idle_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pool_idle_timeout_secs") is not None:
            secs = data["pool_idle_timeout_secs"]
            try:
                as_ms = int(secs) * 1000
            except (TypeError, ValueError):
                return data  # the field's own validation names the bad value
            if "idle_timeout_ms" in data and str(data["idle_timeout_ms"]) != str(as_ms):
                raise ValueError(
                    "pool_idle_timeout_secs and idle_timeout_ms disagree (give one of them)"
                )
            data = {**data, "idle_timeout_ms": as_ms}
        return data

    #: egress policy for provider keys' api_base (aisix.egress): empty = every host
    allowed_hosts: list[str] = Field(default_factory=list)
    denied_cidrs: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_CIDRS))

    _cidrs = field_validator("denied_cidrs")(classmethod(lambda cls, v: _check_cidrs(v)))


class DownstreamSettings(Section):
    #: close a keep-alive connection idle this long between requests (0 = never, AISIX)
    idle_timeout_secs: Annotated[int, Field(ge=0)] = 0
    sse_keepalive_interval_secs: Annotated[int, Field(ge=0)] = 15


class ListenerCaps(Section):
    """Open connections each listener accepts; more are answered 503 and closed."""

    #: 0 = auto: half of what the open-file limit leaves after the admin and status caps
    proxy: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    admin: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    status: Annotated[int, Field(ge=1, le=1_000_000)] = 64


class ListenerSettings(Section):
    """Limits every listener (proxy, admin, status) applies per connection (`aisix.listener`)."""

    #: from connect (or a request's first byte) until its head is complete; 0 = off
    header_read_timeout_secs: Annotated[float, Field(ge=0, le=3600)] = 30
    #: from the end of the head until the whole body has arrived; 0 = off
    body_read_timeout_secs: Annotated[float, Field(ge=0, le=86400)] = 120
    #: a client that accepts no response bytes for this long is cut; 0 = off
    write_timeout_secs: Annotated[float, Field(ge=0, le=86400)] = 30
    #: response bytes buffered per connection before the writer waits for the client
    write_buffer_bytes: Annotated[int, Field(ge=4096, le=64 * 1024 * 1024)] = 64 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    max_headers: Annotated[int, Field(ge=8, le=100_000)] = 100
    max_connections: ListenerCaps = Field(default_factory=ListenerCaps)


class ResponsesSettings(Section):
    """Stored Responses API answers (`store: true`, `previous_response_id`, GET/DELETE)."""

    ttl_secs: Annotated[int, Field(gt=0, le=366 * 86400)] = 30 * 86400
    max_stored: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000


class PrometheusSettings(Section):
    enabled: bool = True
    addr: str = "127.0.0.1:9090"
    path: str = "/metrics"
    #: with proxy.workers > 1: how long a scrape waits for each worker's series
    worker_timeout_ms: Annotated[int, Field(gt=0)] = 2000

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))


class MetricsSettings(Section):
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    #: User-Agent regex → `client_type` label, tried in order before the built-in table
    client_type_rules: Annotated[list[ClientTypeRule], Field(max_length=64)] = Field(
        default_factory=list
    )
    buckets: BucketSettings = Field(default_factory=BucketSettings)


#: AISIX (Rust) level names and Python's, as the stdlib logging level each selects
LOG_LEVELS = {
    "trace": 5,
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
}


class ObservabilitySettings(Section):
    service_name: Annotated[str, Field(min_length=1, max_length=128)] = "aisix"
    log_level: Literal["trace", "debug", "info", "warn", "warning", "error"] = "info"
    access_log: bool = True
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def python_log_level(self) -> int:
        return LOG_LEVELS[self.log_level]

    @property
    def uvicorn_log_level(self) -> str:
        return "warning" if self.log_level == "warn" else self.log_level


class UsageSettings(Section):
    """The usage ledger (hourly aggregates, per-request rows, budget spend, audit log)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    #: postgres only: `postgresql://user:password@host:5432/db` (never logged)
    dsn: str | None = None
    #: per-request rows (minute series) are pruned after this many days; 0 keeps none
    retention_days: Annotated[int, Field(ge=0)] = 30
    #: a write starts as soon as this many events are pending
    batch_size: Annotated[int, Field(ge=1)] = 1000
    #: events waiting in memory at most; more are dropped and counted
    max_pending: Annotated[int, Field(ge=1)] = 10_000
    flush_interval_ms: Annotated[int, Field(gt=0, le=60_000)] = 100
    #: postgres only: batches written here while the database is unreachable, then replayed
    spill_path: str | None = None
    spill_max_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024
    #: postgres only: connect and statement deadline
    timeout_ms: Annotated[int, Field(gt=0)] = 5000

    @model_validator(mode="after")
    def _dsn_required(self) -> UsageSettings:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("dsn: required with backend postgres")
        if self.dsn and self.dsn.partition("://")[0] not in ("postgresql", "postgres"):
            raise ValueError("dsn: must be a postgresql:// (or postgres://) URL")
        return self


class Settings(Section):
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    admin: AdminSettings
    data_dir: str = "data"
    store: StoreSettings | None = None
    etcd: EtcdSettings | None = None
    resources_file: str | None = None
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    managed: ManagedSettings = Field(default_factory=ManagedSettings)
    bedrock_endpoint_url: str | None = None
    usage: UsageSettings = Field(default_factory=UsageSettings)
    #: directory of the config file; relative paths resolve against it (not a config key)
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_etcd_is_no_etcd(cls, data: Any) -> Any:
        """AISIX configs may keep an `etcd` block with no endpoints next to `resources_file`."""
        if isinstance(data, dict) and data.get("resources_file") is not None:
            etcd = data.get("etcd")
            if isinstance(etcd, dict) and not etcd.get("endpoints"):
                data = {k: v for k, v in data.items() if k != "etcd"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if self.etcd is not None and not self.etcd.endpoints:
            raise ValueError("etcd.endpoints: at least one endpoint is required")
        if self.resources_file == "":
            raise ValueError("resources_file: may not be empty")
        chosen = [n for n in ("store", "etcd", "resources_file") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"only one of store, etcd, resources_file may be set (got {chosen})")
        if self.admin_listener_enabled and not self.admin.admin_keys:
            raise ValueError("admin.admin_keys: a non-empty list is required when admin is enabled")
        if self.proxy.workers > 1 and self.ratelimit.backend == "memory":
            raise ValueError(
                "proxy.workers > 1 requires ratelimit.backend: redis "
                "(memory counters are per process)"
            )
        return self

    @property
    def admin_listener_enabled(self) -> bool:
        """Managed mode (AISIX Cloud) never binds the admin listener."""
        return self.admin.enabled and not self.managed.enabled

    @property
    def snapshot_cache(self) -> Path | None:
        path = self.managed.snapshot_cache_path
        return self.resolve(path) if path else None

    def inert_keys(self) -> list[str]:
        """Keys that are set (or switched on) but whose feature aisix has not built yet."""
        inert: list[str] = []
        if "cache" in self.model_fields_set:
            inert.append("cache")
        metrics = self.observability.metrics
        if "otlp" in metrics.model_fields_set:
            inert.append("observability.metrics.otlp")
        if "tracing" in self.observability.model_fields_set:
            inert.append("observability.tracing")
        if metrics.buckets.guardrail_latency is not None:
            inert.append("observability.metrics.buckets.guardrail_latency")
        managed = self.managed.model_fields_set - {"snapshot_cache_path"}
        if managed:
            inert.append("managed" if "enabled" in managed else f"managed.{sorted(managed)[0]}")
        if self.bedrock_endpoint_url is not None:
            inert.append("bedrock_endpoint_url")
        if self.proxy.thread_per_core is not None:
            inert.append("proxy.thread_per_core")
        return inert

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
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return _with_etcd_password(settings, environ)


def _with_etcd_password(settings: Settings, environ: Mapping[str, str]) -> Settings:
    etcd = settings.etcd
    if etcd is None or etcd.password_env is None:
        return settings
    password = environ.get(etcd.password_env)
    if password is None:
        raise ConfigError(f"etcd.password_env: environment variable {etcd.password_env} is not set")
    return settings.model_copy(update={"etcd": etcd.model_copy(update={"password": password})})


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
        "no_proxy",
        "accept_headers",
        "request_e2e_latency",
        "request_ttft",
        "guardrail_latency",
        "allowed_hosts",
        "denied_cidrs",
    }
)
