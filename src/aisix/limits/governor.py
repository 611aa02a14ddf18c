"""The governor: admits a request against every rate-limit layer and budget, and settles it.

`admit_gate` takes the key's and the requested alias's layers and budgets (§6.3), and
`admit_attempt` a routing target's own (§8.3); each makes ONE backend call that reserves in
all buckets or none, and raises `RateLimitRefusal` / `BudgetRefusal` (429, §9.4 / §10.3) with
nothing left taken. The returned `Hold` is finished exactly once: `settle` (tokens and spend
become actual usage), `fail` (reached upstream: request counts stay) or `rollback` (never
reached upstream: everything given back). Concurrency slots are released by all three.

Budget overshoot bound: a block budget admits only while spent + reserved + this request's
worst case ≤ limit, and settlement replaces each reservation by the actual cost. So spend can
exceed the limit only by Σ over in-flight requests of (actual − reserved): zero when every
request sets max_tokens / max_completion_tokens and its upstream prompt count stays within the
estimate (UTF-8 bytes / 4); otherwise at most the excess tokens of those requests at the
model's prices.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from aisix.errors import BudgetExceeded, RateLimited
from aisix.events import Usage
from aisix.limits.base import (
    CONCURRENCY,
    FAIL,
    NANO_PER_USD,
    REQUESTS,
    ROLLBACK,
    SETTLE,
    SPEND,
    TOKENS,
    Admission,
    Check,
    CounterBackend,
    SpendLedger,
    Ticket,
)
from aisix.limits.layers import BudgetSpec, LayerIndex, RateSpec, key_budget_spec
from aisix.limits.metrics import NO_METRICS, LimitMetrics
from aisix.limits.windows import Clock, rfc3339, seconds_until
from aisix.pricing import Estimate, worst_case_usd
from aisix.resources import DirectModel
from aisix.settings import RateLimitSettings
from aisix.snapshot import KeyEntry, ModelEntry, Snapshot

log = logging.getLogger("aisix.limits")
_MESSAGES = {
    REQUESTS: ("request limit exceeded (requests)", "requests"),
    TOKENS: ("token limit exceeded (tokens)", "tokens"),
    CONCURRENCY: ("concurrency limit exceeded", "concurrency"),
}
#: (remaining, limit, reset seconds) of the strictest bucket of one dimension
_Strictest = tuple[int, int, int]


class RateLimitRefusal(RateLimited):
    """429 rate_limit_exceeded; `scope` and `layer` are the metric labels of §12.1."""

    def __init__(self, message: str, scope: str, layer: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.scope = scope
        self.layer = layer


class BudgetRefusal(BudgetExceeded):
    def __init__(self, message: str, scope: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.scope = scope


class Hold:
    """The reservations of one admission. Finishers are idempotent; the first one wins."""

    __slots__ = (
        "_adm",
        "_checks",
        "_done",
        "_ledger",
        "_spend_keys",
        "_ticket",
        "budget_warnings",
        "headers",
    )
    #: x-ratelimit-* of this hold's strictest buckets (§6.5); `ratelimit_headers` merges holds
    headers: list[tuple[bytes, bytes]]

    def __init__(
        self,
        ticket: Ticket | None,
        ledger: SpendLedger | None = None,
        spend_keys: tuple[tuple[str, int], ...] = (),
        checks: list[Check] | None = None,
        adm: Admission | None = None,
        budget_warnings: list[str] | None = None,
    ) -> None:
        self._ticket = ticket
        self._done = ticket is None
        self._ledger = ledger
        self._spend_keys = spend_keys
        self._checks = checks
        self._adm = adm
        #: names of warn budgets this request pushes past their limit (do not mutate)
        self.budget_warnings: list[str] = budget_warnings if budget_warnings is not None else []

    def __getattr__(self, name: str) -> Any:
        # `headers` is a slot filled on first read (only successes read it, once)
        if name == "headers":
            self.headers = ratelimit_headers(self)
            return self.headers
        raise AttributeError(name)

    def strictest(self) -> dict[str, _Strictest]:
        """Per dimension (requests, tokens): (remaining, limit, reset s) of the tightest bucket."""
        found: dict[str, _Strictest] = {}
        if self._checks is None or self._adm is None:
            return found
        adm = self._adm
        for i, check in enumerate(self._checks):
            if check.dim == REQUESTS or check.dim == TOKENS:
                remaining = max(0, check.limit - adm.used[i] - check.amount)
                best = found.get(check.dim)
                if best is None or remaining < best[0]:
                    found[check.dim] = (remaining, check.limit, seconds_until(adm.ends[i], adm.now))
        return found

    async def settle(self, usage: Usage, cost_usd: float) -> None:
        if self._done:
            return
        self._done = True
        spend = max(0, round(cost_usd * NANO_PER_USD))
        assert self._ticket is not None
        await self._ticket.finish(SETTLE, max(0, usage.total_tokens), spend)
        if self._ledger is not None and spend:
            for key, start in self._spend_keys:
                self._ledger.add_spend(key, start, spend)

    async def fail(self) -> None:
        await self._release(FAIL)

    async def rollback(self) -> None:
        await self._release(ROLLBACK)

    async def _release(self, mode: str) -> None:
        if self._done:
            return
        self._done = True
        assert self._ticket is not None
        await self._ticket.finish(mode, 0, 0)


NOOP_HOLD = Hold(None)


def ratelimit_headers(*holds: Hold) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-* of the strictest request bucket and token bucket among `holds` (§6.5)."""
    best: dict[str, _Strictest] = {}
    for hold in holds:
        for dim, found in hold.strictest().items():
            if dim not in best or found[0] < best[dim][0]:
                best[dim] = found
    headers: list[tuple[bytes, bytes]] = []
    for dim, suffix in ((REQUESTS, b"requests"), (TOKENS, b"tokens")):
        if dim in best:
            remaining, limit, reset = best[dim]
            headers += [
                (b"x-ratelimit-limit-" + suffix, str(limit).encode()),
                (b"x-ratelimit-remaining-" + suffix, str(remaining).encode()),
                (b"x-ratelimit-reset-" + suffix, f"{reset}s".encode()),
            ]
    return headers


class Governor:
    def __init__(
        self,
        settings: RateLimitSettings,
        backend: CounterBackend,
        ledger: SpendLedger | None,
        clock: Clock = time.time,
        metrics: LimitMetrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self._ledger = ledger
        self._clock = clock
        self._metrics = metrics
        self._indexes: list[tuple[Snapshot, LayerIndex]] = []
        self._warned: dict[str, int] = {}
        if ledger is not None:
            backend.preload_spend(ledger.load_spend())

    async def close(self) -> None:
        await self.backend.close()

    def index(self, snap: Snapshot) -> LayerIndex:
        for known, index in self._indexes:
            if known is snap:
                return index
        index = LayerIndex(snap)
        # the current snapshot and the previous one (requests still running on it)
        self._indexes = [(snap, index), *self._indexes[:1]]
        return index

    async def admit_gate(
        self,
        snap: Snapshot,
        key: KeyEntry,
        alias: ModelEntry,
        est: Estimate,
        candidates: list[ModelEntry],
    ) -> Hold:
        index = self.index(snap)
        rates = index.key_rate(key) + index.model_rate(alias)
        budgets = index.key_budgets(key) + index.model_budgets(alias)
        if not rates and not budgets:
            return NOOP_HOLD
        worst = max((worst_case_usd(_pricing(c), est) for c in candidates), default=0.0)
        return await self._admit(rates, budgets, est, worst)

    async def admit_attempt(
        self,
        snap: Snapshot,
        key: KeyEntry,
        target: ModelEntry,
        est: Estimate,
        gate_alias: ModelEntry,
    ) -> Hold:
        index = self.index(snap)
        if target is gate_alias or target.id == gate_alias.id:
            rates: tuple[RateSpec, ...] = ()  # the gate took this model's layers already
            budgets = index.provider_key_budgets(target)
        else:
            rates = index.model_rate(target)
            budgets = index.model_budgets(target) + index.provider_key_budgets(target)
        if not rates and not budgets:
            return NOOP_HOLD
        return await self._admit(rates, budgets, est, worst_case_usd(_pricing(target), est))

    async def _admit(
        self,
        rates: tuple[RateSpec, ...],
        budgets: tuple[BudgetSpec, ...],
        est: Estimate,
        worst_usd: float,
    ) -> Hold:
        total = est.total
        worst = math.ceil(worst_usd * NANO_PER_USD)
        checks = [
            Check(s.key, s.dim, s.window, s.limit, min(total, s.limit) if s.dim == TOKENS else 1)
            for s in rates
        ]
        checks += [
            Check(b.key, SPEND, b.window, b.limit, min(worst, b.limit), b.enforce) for b in budgets
        ]
        adm = await self.backend.acquire(checks)
        if adm.refused >= 0:
            if adm.refused < len(rates):
                spec = rates[adm.refused]
                self._metrics.ratelimit_rejected(_MESSAGES[spec.dim][1], spec.layer)
                raise _rate_refusal(spec, adm)
            budget = budgets[adm.refused - len(rates)]
            self._metrics.budget_rejected(budget.scope)
            raise _budget_refusal(budget, adm, adm.refused)
        offset = len(rates)
        warnings = [
            b.name
            for i, b in enumerate(budgets, offset)
            if not b.enforce and self._warn(b, adm, i, checks[i].amount)
        ]
        spend_keys = tuple((b.key, adm.starts[i]) for i, b in enumerate(budgets, offset))
        return Hold(
            adm.ticket,
            self._ledger,
            spend_keys,
            checks if rates else None,
            adm,
            warnings,
        )

    def _warn(self, budget: BudgetSpec, adm: Admission, i: int, amount: int) -> bool:
        if adm.used[i] + adm.reserved[i] + amount <= budget.limit:
            return False
        self._metrics.budget_warned(budget.scope)
        if self._warned.get(budget.key) != adm.starts[i]:
            self._warned[budget.key] = adm.starts[i]
            log.warning(
                'warn budget "%s" (%s "%s") is past its limit of %s USD for this %s',
                budget.name,
                budget.scope,
                budget.scope_ref,
                budget.limit_usd,
                budget.period,
            )
        return True

    async def budget_state(self, snap: Snapshot, key: KeyEntry) -> dict[str, Any] | None:
        """The key's own budget now (§10.4 `budget` object), or None without one."""
        spec = key_budget_spec(key)
        if spec is None:
            return None
        adm = await self.backend.acquire(
            [Check(spec.key, SPEND, spec.window, spec.limit, 0, False)], dry=True
        )
        spent, reserved = adm.used[0] / NANO_PER_USD, adm.reserved[0] / NANO_PER_USD
        return {
            "limit_usd": spec.limit_usd,
            "period": spec.period,
            "mode": "block" if spec.enforce else "warn",
            "period_start": rfc3339(adm.starts[0]),
            "period_resets_at": rfc3339(adm.ends[0]) if adm.ends[0] else None,
            "spent_usd": spent,
            "reserved_usd": reserved,
            "remaining_usd": max(0.0, round(spec.limit_usd - spent - reserved, 9)),
        }


def _pricing(model: ModelEntry) -> Any:
    return model.value.pricing if isinstance(model.value, DirectModel) else None


def _rate_refusal(spec: RateSpec, adm: Admission) -> RateLimitRefusal:
    message, scope = _MESSAGES[spec.dim]
    retry_after = 1 if spec.dim == CONCURRENCY else seconds_until(adm.ends[adm.refused], adm.now)
    extra: dict[str, Any] = {}
    if spec.policy_id is not None:
        message += f" (policy '{spec.policy_name}')"
        extra["policy"] = {"id": spec.policy_id, "name": spec.policy_name}
    return RateLimitRefusal(
        message, scope, spec.layer, headers={"Retry-After": str(retry_after)}, extra=extra
    )


def _budget_refusal(spec: BudgetSpec, adm: Admission, i: int) -> BudgetRefusal:
    end = adm.ends[i]
    return BudgetRefusal(
        f'budget exceeded for {spec.scope} "{spec.scope_ref}"',
        spec.scope,
        headers={"Retry-After": str(seconds_until(end, adm.now))} if end else {},
        extra={
            "scope": spec.scope,
            "scope_ref": spec.scope_ref,
            "limit_usd": spec.limit_usd,
            "spent_usd": adm.used[i] / NANO_PER_USD,
            "period": spec.period,
            "period_resets_at": rfc3339(end) if end else None,
        },
    )
