"""The immutable view of all resources that one proxy request reads.

A `Snapshot` is compiled once per change (by `aisix.loader.build_snapshot`) into the lookup
tables the hot path needs: API keys by SHA-256 hash, models by alias, single-target aliases
sorted for `/v1/models`, policies by scope. `SnapshotHolder.current` is swapped by one
attribute assignment; a request reads it once and never sees a half-applied change.
Nothing mutates a published snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aisix.resources import (
    ApiKey,
    BudgetPolicy,
    DirectModel,
    ProviderKey,
    RateLimitPolicy,
    RoutingModel,
)


@dataclass(frozen=True, slots=True)
class Record:
    """One stored resource as a store returns it (value as stored, secrets included)."""

    kind: str
    id: str
    value: dict[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Compiled `allowed_models`: exact names, one-star globs, or everything."""

    allow_all: bool
    exact: frozenset[str]
    globs: tuple[tuple[str, str], ...]

    @classmethod
    def compile(cls, entries: list[str]) -> Allowlist:
        exact: set[str] = set()
        globs: list[tuple[str, str]] = []
        allow_all = False
        for entry in entries:
            stars = entry.count("*")
            if stars == 0:
                exact.add(entry)
            elif stars == 1:
                prefix, suffix = entry.split("*")
                if not prefix and not suffix:
                    allow_all = True
                globs.append((prefix, suffix))
        return cls(allow_all, frozenset(exact), tuple(globs))

    def allows(self, alias: str) -> bool:
        if self.allow_all or alias in self.exact:
            return True
        for prefix, suffix in self.globs:
            if (
                len(alias) >= len(prefix) + len(suffix)
                and alias.startswith(prefix)
                and alias.endswith(suffix)
            ):
                return True
        return False


@dataclass(frozen=True, slots=True)
class ProviderKeyEntry:
    id: str
    revision: int
    value: ProviderKey
    #: the stored value chose its adapter (`aisix.loader.adapter_was_explicit`)
    adapter_explicit: bool = True


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model alias. Direct models carry their provider key and a built upstream target."""

    id: str
    revision: int
    value: DirectModel | RoutingModel
    provider_key: ProviderKeyEntry | None = None
    #: adapter-specific upstream handle built by the supervisor's target factory
    target: Any = None
    #: routing aliases: (target model entry, weight, priority) in declaration order
    routes: tuple[tuple[ModelEntry, int, int], ...] = ()
    networks: tuple[Any, ...] = ()
    #: this alias or one of its targets has `allowed_cidrs`, so the client IP matters
    ip_sensitive: bool = False
    #: the value resolved once, as exactly one of the two kinds (no isinstance checks on the
    #: request path: `entry.direct` / `entry.routing`)
    direct: DirectModel | None = field(default=None, init=False)
    routing: RoutingModel | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.value, RoutingModel):
            object.__setattr__(self, "routing", self.value)
        else:
            object.__setattr__(self, "direct", self.value)

    @property
    def alias(self) -> str:
        return self.value.display_name

    @property
    def is_routing(self) -> bool:
        return self.routing is not None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: str
    revision: int
    value: ApiKey
    allowlist: Allowlist
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """What a caller hash resolves to; `valid_until` bounds a rotated-out previous hash."""

    key: KeyEntry
    valid_until: float | None


@dataclass(frozen=True, slots=True)
class Rejected:
    kind: str
    id: str
    name: str | None
    error: str
    serving_stale_since: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    applied_at: float
    provider_keys: dict[str, ProviderKeyEntry] = field(default_factory=dict)
    models_by_id: dict[str, ModelEntry] = field(default_factory=dict)
    models_by_alias: dict[str, ModelEntry] = field(default_factory=dict)
    listable_models: tuple[ModelEntry, ...] = ()
    api_keys: dict[str, KeyEntry] = field(default_factory=dict)
    keys_by_hash: dict[str, KeyMatch] = field(default_factory=dict)
    rate_limit_policies: dict[str, RateLimitPolicy] = field(default_factory=dict)
    budget_policies: dict[str, BudgetPolicy] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()
    #: unknown fields dropped from stored resources: (kind, field path, resources)
    partially_compatible: tuple[tuple[str, str, int], ...] = ()
    #: the valid records this snapshot was built from, by kind then id (for stale serving)
    records: dict[str, dict[str, Record]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "provider_keys": len(self.provider_keys),
            "models": len(self.models_by_id),
            "api_keys": len(self.api_keys),
            "rate_limit_policies": len(self.rate_limit_policies),
            "budget_policies": len(self.budget_policies),
        }


class SnapshotHolder:
    """Owns the current snapshot; `current` is None until the first one is loaded."""

    __slots__ = ("current", "listeners")

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.listeners: list[Any] = []

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        for listener in self.listeners:
            listener(snapshot)


def now() -> float:
    return time.time()
