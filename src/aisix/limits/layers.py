"""Which rate-limit buckets and budgets apply to a key, a model or a provider key (§9.1, §10.1).

`LayerIndex` is built once per snapshot: it groups policies by `(scope, scope_ref)` and then
memoises, per key / model / provider key, the static bucket specs (Redis key, dimension,
window, limit, and what to say when the bucket refuses). Only the per-request amounts are
added later, by the governor. Bucket names: `key:<id>`, `model:<id>`, `policy:<id>` (and
`policy:<id>:<user_id>` for team_member), `budget:key:<id>`, `budget:policy:<id>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aisix.limits.base import CONCURRENCY, NANO_PER_USD, REQUESTS, SPEND, TOKENS
from aisix.limits.windows import DAY, HOUR, MINUTE, PERIODS, POLICY_WINDOWS, SECOND
from aisix.resources import Budget, BudgetPolicy, RateLimit, RateLimitPolicy
from aisix.snapshot import KeyEntry, ModelEntry, Snapshot

_INLINE_FIELDS = (
    ("rps", REQUESTS, SECOND),
    ("rpm", REQUESTS, MINUTE),
    ("rph", REQUESTS, HOUR),
    ("rpd", REQUESTS, DAY),
    ("tpm", TOKENS, MINUTE),
    ("tpd", TOKENS, DAY),
)
_DIM_NAMES = {REQUESTS: "requests", TOKENS: "tokens"}
#: the largest budget limit or stored spend sum: every backend keeps it exact (int64)
MAX_NANO_USD = 2**62
#: the largest amount one request reserves or settles (nano-USD, tokens): Redis scripts see
#: numbers as Lua doubles, exact (and sent back to Redis as integers) only up to 2**53
MAX_AMOUNT = 2**53 - 1


@dataclass(frozen=True, slots=True)
class RateSpec:
    key: str
    dim: str
    window: int
    limit: int
    #: `api_key` | `model` | `policy` (metric label)
    layer: str
    policy_id: str | None = None
    policy_name: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    key: str
    window: int
    limit: int
    enforce: bool
    #: `api_key` | `team` | `user` | `model` | `provider_key`
    scope: str
    scope_ref: str
    period: str
    limit_usd: float
    #: what warnings list: the policy name, or `api_key:<id>` for a key's own budget
    name: str

    dim = SPEND


def nano_usd(usd: float, ceil: bool = False, cap: int = MAX_NANO_USD) -> int:
    """USD as bucket nano-USD, clamped to [0, cap]: a non-finite or huge amount (an
    unvalidated old value, an absurd upstream usage) saturates instead of raising."""
    nano = usd * NANO_PER_USD
    if 0 <= nano < cap:  # False for NaN too
        return math.ceil(nano) if ceil else round(nano)
    return cap if nano > 0 else 0


def _bucket_key(bucket: str, dimension: str) -> str:
    return f"aisix:rl:{{{bucket}}}:{dimension}"


def inline_specs(bucket: str, limit: RateLimit | None, layer: str) -> tuple[RateSpec, ...]:
    if limit is None:
        return ()
    specs = [
        RateSpec(_bucket_key(bucket, f"{_DIM_NAMES[dim]}.{window}"), dim, window, value, layer)
        for name, dim, window in _INLINE_FIELDS
        if (value := getattr(limit, name)) is not None
    ]
    if limit.concurrency is not None:
        key = _bucket_key(bucket, "concurrency")
        specs.append(RateSpec(key, CONCURRENCY, 0, limit.concurrency, layer))
    return tuple(specs)


def policy_specs(pid: str, policy: RateLimitPolicy, bucket: str) -> tuple[RateSpec, ...]:
    window = POLICY_WINDOWS[policy.window]
    specs = []
    for dim, value in ((REQUESTS, policy.max_requests), (TOKENS, policy.max_tokens)):
        if value is not None:
            key = _bucket_key(bucket, f"{_DIM_NAMES[dim]}.{window}")
            specs.append(RateSpec(key, dim, window, value, "policy", pid, policy.name))
    return tuple(specs)


def budget_spec(
    bucket: str, budget: Budget | BudgetPolicy, scope: str, scope_ref: str, name: str
) -> BudgetSpec:
    return BudgetSpec(
        key=_bucket_key(bucket, f"spend.{budget.period}"),
        window=PERIODS[budget.period],
        limit=nano_usd(budget.limit_usd),
        enforce=budget.mode == "block",
        scope=scope,
        scope_ref=scope_ref,
        period=budget.period,
        limit_usd=budget.limit_usd,
        name=name,
    )


def key_budget_spec(key: KeyEntry) -> BudgetSpec | None:
    budget = key.value.budget
    if budget is None:
        return None
    return budget_spec(f"budget:key:{key.id}", budget, "api_key", key.id, f"api_key:{key.id}")


class LayerIndex:
    """Static specs per key / model / provider key for one snapshot, built lazily."""

    def __init__(self, snap: Snapshot) -> None:
        self._rate: dict[tuple[str, str], list[tuple[str, RateLimitPolicy]]] = {}
        for pid, rpol in snap.rate_limit_policies.items():
            self._rate.setdefault((rpol.scope, rpol.scope_ref), []).append((pid, rpol))
        budgets: dict[tuple[str, str], list[BudgetSpec]] = {}
        for pid, bpol in snap.budget_policies.items():
            spec = budget_spec(f"budget:policy:{pid}", bpol, bpol.scope, bpol.scope_ref, bpol.name)
            budgets.setdefault((bpol.scope, bpol.scope_ref), []).append(spec)
        self._budget = {scope: tuple(specs) for scope, specs in budgets.items()}
        self._key_rate: dict[str, tuple[RateSpec, ...]] = {}
        self._model_rate: dict[str, tuple[RateSpec, ...]] = {}
        self._key_budgets: dict[str, tuple[BudgetSpec, ...]] = {}

    def key_rate(self, key: KeyEntry) -> tuple[RateSpec, ...]:
        specs = self._key_rate.get(key.id)
        if specs is None:
            specs = inline_specs(f"key:{key.id}", key.value.rate_limit, "api_key")
            team, user = key.value.team_id, key.value.user_id
            scopes = [("api_key", key.id, "")]
            if team is not None:
                scopes.append(("team", team, ""))
                if user is not None:
                    scopes.append(("team_member", team, f":{user}"))
            if user is not None:
                scopes.append(("member", user, ""))
            for scope, ref, suffix in scopes:
                for pid, policy in self._rate.get((scope, ref), ()):
                    specs += policy_specs(pid, policy, f"policy:{pid}{suffix}")
            self._key_rate[key.id] = specs
        return specs

    def model_rate(self, model: ModelEntry) -> tuple[RateSpec, ...]:
        specs = self._model_rate.get(model.id)
        if specs is None:
            specs = inline_specs(f"model:{model.id}", model.value.rate_limit, "model")
            for pid, policy in self._rate.get(("model", model.id), ()):
                specs += policy_specs(pid, policy, f"policy:{pid}")
            self._model_rate[model.id] = specs
        return specs

    def key_budgets(self, key: KeyEntry) -> tuple[BudgetSpec, ...]:
        specs = self._key_budgets.get(key.id)
        if specs is None:
            own = key_budget_spec(key)
            found = [own] if own is not None else []
            if key.value.team_id is not None:
                found += self._budget.get(("team", key.value.team_id), ())
            if key.value.user_id is not None:
                found += self._budget.get(("user", key.value.user_id), ())
            specs = self._key_budgets[key.id] = tuple(found)
        return specs

    def model_budgets(self, model: ModelEntry) -> tuple[BudgetSpec, ...]:
        return self._budget.get(("model", model.id), ())

    def provider_key_budgets(self, model: ModelEntry) -> tuple[BudgetSpec, ...]:
        if model.direct is None:
            return ()
        return self._budget.get(("provider_key", model.direct.provider_key_id), ())
