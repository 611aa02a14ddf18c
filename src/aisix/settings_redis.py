"""Redis connection settings (`ratelimit.redis`, and AISIX's `cache.redis`).

`RedisConn` is one Redis endpoint: `single` (a `redis://`, `rediss://` or `unix://` URL),
`sentinel` (`host:port` sentinels, or AISIX's `redis://host:port` URLs, plus `master_name`) or
`cluster` (refused for the rate-limit counters: one admission spans several buckets, which a
cluster shards across slots; `CacheRedisConn` accepts it for AISIX's cache section).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from aisix.settings_compat import Section


class RedisTLS(Section):
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    verify: bool = True


class RedisConn(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    #: the counters refuse cluster mode; AISIX's cache section may name one
    cluster_allowed: ClassVar[bool] = False

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

    @field_validator("sentinels", mode="before")
    @classmethod
    def _sentinel_urls(cls, value: Any) -> Any:
        """AISIX writes sentinels as `redis://host:port` URLs; aisix dials `host:port`."""
        if not isinstance(value, list):
            return value
        out = []
        for entry in value:
            if isinstance(entry, str) and "://" in entry:
                parts = urlsplit(entry.strip())
                try:
                    port = parts.port
                except ValueError:
                    port = None
                if parts.hostname and port:
                    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                    entry = f"{host}:{port}"
            out.append(entry)
        return out

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisConn:
        if self.mode == "single" and not self.url:
            raise ValueError("url: required with mode single")
        if self.mode == "cluster" and not self.nodes:
            raise ValueError("nodes: required with mode cluster")
        if self.mode == "sentinel" and not (self.sentinels and self.master_name):
            raise ValueError("sentinels and master_name: required with mode sentinel")
        if self.mode == "cluster" and not self.cluster_allowed:
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


class CacheRedisConn(RedisConn):
    cluster_allowed: ClassVar[bool] = True
