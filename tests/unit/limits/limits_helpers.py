"""Builders for snapshots, keys and models used by the limits tests (no store, no loader)."""

from __future__ import annotations

import hashlib
from typing import Any

from aisix.limits.governor import Governor
from aisix.limits.memory import MemoryBackend
from aisix.pricing import Estimate
from aisix.resources import (
    ApiKey,
    Budget,
    BudgetPolicy,
    DirectModel,
    Pricing,
    ProviderKey,
    RateLimit,
    RateLimitPolicy,
    Routing,
    RoutingModel,
    RoutingTarget,
)
from aisix.settings import RateLimitSettings
from aisix.snapshot import Allowlist, KeyEntry, ModelEntry, ProviderKeyEntry, Snapshot

PK = ProviderKeyEntry("pk1", 1, ProviderKey(display_name="pk1", secret="s"))
EST = Estimate(prompt_tokens=10, completion_cap=20)


class FakeClock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


def price(inp: float, out: float, cached: float | None = None) -> Pricing:
    return Pricing(input_per_million=inp, output_per_million=out, cached_input_per_million=cached)


def model(
    mid: str,
    rate_limit: dict[str, int] | None = None,
    pricing: Pricing | None = None,
    pk: ProviderKeyEntry = PK,
) -> ModelEntry:
    value = DirectModel(
        display_name=mid,
        provider="openai",
        model_name="gpt",
        provider_key_id=pk.id,
        rate_limit=RateLimit(**rate_limit) if rate_limit else None,
        pricing=pricing,
    )
    return ModelEntry(mid, 1, value, provider_key=pk)


def routing(
    mid: str, targets: list[ModelEntry], rate_limit: dict[str, int] | None = None
) -> ModelEntry:
    value = RoutingModel(
        display_name=mid,
        routing=Routing(targets=[RoutingTarget(model=t.alias) for t in targets]),
        rate_limit=RateLimit(**rate_limit) if rate_limit else None,
    )
    return ModelEntry(mid, 1, value, routes=tuple((t, 1, 0) for t in targets))


def key(
    kid: str = "k1",
    rate_limit: dict[str, int] | None = None,
    budget: dict[str, Any] | None = None,
    team: str | None = None,
    user: str | None = None,
) -> KeyEntry:
    value = ApiKey(
        key_hash=hashlib.sha256(kid.encode()).hexdigest(),
        allowed_models=["*"],
        team_id=team,
        user_id=user,
        rate_limit=RateLimit(**rate_limit) if rate_limit else None,
        budget=Budget(**budget) if budget else None,
    )
    return KeyEntry(kid, 1, value, Allowlist.compile(["*"]), None)


def snapshot(
    keys: list[KeyEntry] = (),  # type: ignore[assignment]
    models: list[ModelEntry] = (),  # type: ignore[assignment]
    rate_policies: dict[str, dict[str, Any]] | None = None,
    budget_policies: dict[str, dict[str, Any]] | None = None,
) -> Snapshot:
    return Snapshot(
        revision=1,
        applied_at=0.0,
        provider_keys={PK.id: PK},
        models_by_id={m.id: m for m in models},
        models_by_alias={m.alias: m for m in models},
        api_keys={k.id: k for k in keys},
        rate_limit_policies={pid: RateLimitPolicy(**p) for pid, p in (rate_policies or {}).items()},
        budget_policies={pid: BudgetPolicy(**p) for pid, p in (budget_policies or {}).items()},
    )


def memory_governor(clock: FakeClock | None = None, ledger: Any = None) -> Governor:
    clock = clock or FakeClock()
    backend = MemoryBackend(clock, concurrency_ttl_secs=300)
    return Governor(RateLimitSettings(), backend, ledger, clock=clock)
