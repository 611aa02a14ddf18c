"""The governor: admits a request against every rate-limit layer and budget, and settles it.

`admit_gate` takes the key's and the requested alias's layers and budgets (§6.3), and
`admit_attempt` a routing target's own (§8.3), `admit_key` the key's alone (passthrough);
each makes ONE backend call that reserves in all buckets or none, and raises
`RateLimitRefusal` / `BudgetRefusal` (429, §9.4 / §10.3) with nothing left taken. The
returned `Hold` is finished exactly once: `settle` (tokens and spend become actual usage),
`fail` (reached upstream: request counts stay) or `rollback` (never reached upstream:
everything given back). Concurrency slots are released by all three.

Budget overshoot bound: a block budget admits only while spent + reserved + this request's
worst case ≤ limit, and settlement replaces each reservation by the actual cost. So spend can
exceed the limit only by Σ over in-flight requests of (actual − reserved): zero when every
request sets max_tokens / max_completion_tokens and its upstream prompt count stays within the
estimate (UTF-8 bytes / 4); otherwise at most the excess tokens of those requests at the
model's prices.
"""

from __future__ import annotations

import logging
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
from aisix.limits.layers import (
    MAX_AMOUNT,
    BudgetSpec,
    LayerIndex,
    RateSpec,
    key_budget_spec,
    nano_usd,
)
from aisix.limits.memory import MemoryBackend, MemoryTicket
from aisix.limits.metrics import NO_METRICS, LimitMetrics
from aisix.limits.windows import Clock, seconds_until
from aisix.pricing import Estimate, worst_case_usd
from aisix.resources import format_rfc3339
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


class _Plan:
    """Everything about one layer set that does not depend on the request, built once.

    Governor caches one per (snapshot, key, alias) for gates and per (snapshot, target) for
    attempts. `checks` are index-aligned with `rates + budgets`; request and concurrency
    checks (amount 1) are shared by every admission, token and spend checks are templates
    replaced per request by copies with the request's amount. Checks are never mutated.
    """

    __slots__ = (
        "budgets",
        "checks",
        "limits",
        "rates",
        "requests_at",
        "spends",
        "tokens",
        "tokens_at",
        "warn",
    )

    def __init__(self, rates: tuple[RateSpec, ...], budgets: tuple[BudgetSpec, ...]) -> None:
        self.rates = rates
        self.budgets = budgets
        checks = [Check(s.key, s.dim, s.window, s.limit, 1) for s in rates]
        checks += [Check(b.key, SPEND, b.window, b.limit, 0, b.enforce) for b in budgets]
        self.checks = checks
        self.tokens = tuple((i, c) for i, c in enumerate(checks) if c.dim == TOKENS)
        self.spends = tuple((i, c) for i, c in enumerate(checks) if c.dim == SPEND)
        #: where the request and token buckets are, for the x-ratelimit-* headers
        self.requests_at = tuple(i for i, c in enumerate(checks) if c.dim == REQUESTS)
        self.tokens_at = tuple(i for i, _ in self.tokens)
        self.limits = [str(c.limit).encode() for c in checks]
        self.warn = tuple((i, b) for i, b in enumerate(budgets, len(rates)) if not b.enforce)


#: a layer set with nothing in it: admissions against it return NOOP_HOLD
_EMPTY = _Plan((), ())
#: plans kept per snapshot before the cache starts over (keys × aliases can be large)
MAX_PLANS = 4096
_NO_WARNINGS: list[str] = []


class _SnapshotPlans:
    __slots__ = ("attempts", "gates", "index")

    def __init__(self, index: LayerIndex) -> None:
        self.index = index
        self.gates: dict[tuple[str, str], _Plan] = {}
        self.attempts: dict[tuple[str, bool], _Plan] = {}


class Hold:
    """The reservations of one admission. Finishers are idempotent; the first one wins."""

    __slots__ = (
        "_adm",
        "_checks",
        "_done",
        "_headers",
        "_ledger",
        "_plan",
        "_ticket",
        "budget_warnings",
    )

    def __init__(
        self,
        ticket: Ticket | None,
        ledger: SpendLedger | None = None,
        plan: _Plan | None = None,
        checks: list[Check] | None = None,
        adm: Admission | None = None,
        budget_warnings: list[str] | None = None,
    ) -> None:
        self._ticket = ticket
        self._done = ticket is None
        self._ledger = ledger
        self._plan = plan
        self._checks = checks
        self._adm = adm
        self._headers: list[tuple[bytes, bytes]] | None = None
        #: names of warn budgets this request pushes past their limit (do not mutate)
        self.budget_warnings: list[str] = budget_warnings if budget_warnings is not None else []

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """x-ratelimit-* of this hold's strictest buckets (§6.5); `ratelimit_headers` merges
        holds. Computed on first read (a plain slot: `__getattr__` would slow every access)."""
        if self._headers is None:
            self._headers = ratelimit_headers(self)
        return self._headers

    def strictest(self) -> dict[str, _Strictest]:
        """Per dimension (requests, tokens): (remaining, limit, reset s) of the tightest bucket."""
        found: dict[str, _Strictest] = {}
        for dim in (REQUESTS, TOKENS):
            best = self._tightest(dim)
            if best is not None:
                remaining, i = best
                assert self._checks is not None and self._adm is not None
                limit, adm = self._checks[i].limit, self._adm
                found[dim] = (remaining, limit, seconds_until(adm.ends[i], adm.now))
        return found

    def _tightest(self, dim: str) -> tuple[int, int] | None:
        """(remaining, check index) of the first bucket of `dim` with the least remaining."""
        plan, checks, adm = self._plan, self._checks, self._adm
        if plan is None or checks is None or adm is None:
            return None
        best: tuple[int, int] | None = None
        used = adm.used
        for i in plan.requests_at if dim == REQUESTS else plan.tokens_at:
            check = checks[i]
            remaining = check.limit - used[i] - check.amount
            if remaining < 0:
                remaining = 0
            if best is None or remaining < best[0]:
                best = (remaining, i)
        return best

    async def settle(self, usage: Usage, cost_usd: float) -> None:
        if self._done:
            return
        self._done = True
        nano = cost_usd * NANO_PER_USD  # nano_usd() inlined: settle runs on every request
        spend = round(nano) if 0 <= nano < MAX_AMOUNT else (MAX_AMOUNT if nano > 0 else 0)
        tokens = usage.total_tokens
        if tokens > MAX_AMOUNT:  # an upstream's absurd count must not break the settle
            tokens = MAX_AMOUNT
        ticket = self._ticket
        if type(ticket) is MemoryTicket:
            ticket.finish_now(SETTLE, tokens if tokens > 0 else 0, spend)  # skip a coroutine
        else:
            assert ticket is not None
            await ticket.finish(SETTLE, tokens if tokens > 0 else 0, spend)
        ledger = self._ledger
        if ledger is not None and spend and self._plan is not None and self._adm is not None:
            starts = self._adm.starts
            for i, check in self._plan.spends:
                ledger.add_spend(check.key, starts[i], spend)

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
_REQUEST_NAMES = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKEN_NAMES = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)


def ratelimit_headers(*holds: Hold) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-* of the strictest request bucket and token bucket among `holds` (§6.5).

    Ties go to the earlier hold, and within a hold to the earlier bucket."""
    headers: list[tuple[bytes, bytes]] = []
    for dim, names in ((REQUESTS, _REQUEST_NAMES), (TOKENS, _TOKEN_NAMES)):
        least = -1  # least remaining so far (-1: none yet), its hold and check index
        least_hold, least_at = NOOP_HOLD, 0
        for hold in holds:
            found = hold._tightest(dim)
            if found is not None and (least < 0 or found[0] < least):
                (least, least_at), least_hold = found, hold
        if least >= 0:
            headers += _dimension_headers(names, least_hold, least_at, least)
    return headers


def _dimension_headers(
    names: tuple[bytes, bytes, bytes], hold: Hold, i: int, remaining: int
) -> tuple[tuple[bytes, bytes], ...]:
    plan, adm = hold._plan, hold._adm
    assert plan is not None and adm is not None
    return (
        (names[0], plan.limits[i]),
        (names[1], str(remaining).encode()),
        (names[2], b"%ds" % seconds_until(adm.ends[i], adm.now)),
    )


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
        self._snapshots: list[tuple[Snapshot, _SnapshotPlans]] = []
        self._warned: dict[str, int] = {}
        if ledger is not None:
            backend.preload_spend(ledger.load_spend())

    async def close(self) -> None:
        await self.backend.close()

    def _plans(self, snap: Snapshot) -> _SnapshotPlans:
        for known, plans in self._snapshots:
            if known is snap:
                return plans
        plans = _SnapshotPlans(LayerIndex(snap))
        # the current snapshot and the previous one (requests still running on it)
        self._snapshots = [(snap, plans), *self._snapshots[:1]]
        return plans

    def index(self, snap: Snapshot) -> LayerIndex:
        return self._plans(snap).index

    def gate_plan(self, snap: Snapshot, key: KeyEntry, alias: ModelEntry) -> _Plan:
        """The key's and the alias's layers and budgets (§6.3), cached per snapshot."""
        plans = self._plans(snap)
        plan = plans.gates.get((key.id, alias.id))
        if plan is None:
            index = plans.index
            rates = index.key_rate(key) + index.model_rate(alias)
            budgets = index.key_budgets(key) + index.model_budgets(alias)
            plan = _Plan(rates, budgets) if rates or budgets else _EMPTY
            if len(plans.gates) >= MAX_PLANS:
                plans.gates.clear()
            plans.gates[(key.id, alias.id)] = plan
        return plan

    def attempt_plan(self, snap: Snapshot, target: ModelEntry, gate_alias: ModelEntry) -> _Plan:
        """A routing target's own layers and budgets (§8.3), cached per snapshot."""
        plans = self._plans(snap)
        same = target is gate_alias or target.id == gate_alias.id
        plan = plans.attempts.get((target.id, same))
        if plan is None:
            index = plans.index
            if same:
                rates: tuple[RateSpec, ...] = ()  # the gate took this model's layers already
                budgets = index.provider_key_budgets(target)
            else:
                rates = index.model_rate(target)
                budgets = index.model_budgets(target) + index.provider_key_budgets(target)
            plan = _Plan(rates, budgets) if rates or budgets else _EMPTY
            if len(plans.attempts) >= MAX_PLANS:
                plans.attempts.clear()
            plans.attempts[(target.id, same)] = plan
        return plan

    async def admit_gate(
        self,
        snap: Snapshot,
        key: KeyEntry,
        alias: ModelEntry,
        est: Estimate,
        candidates: list[ModelEntry],
    ) -> Hold:
        plan = self.gate_plan(snap, key, alias)
        if plan is _EMPTY:
            return NOOP_HOLD
        worst = 0.0
        if plan.spends:
            if len(candidates) == 1:
                worst = worst_case_usd(_pricing(candidates[0]), est)
            else:
                worst = max((worst_case_usd(_pricing(c), est) for c in candidates), default=0.0)
        checks = _checks(plan, est, worst)
        backend = self.backend
        if type(backend) is MemoryBackend:
            adm = backend.admit(checks)  # no I/O: skip a coroutine
        else:
            adm = await backend.acquire(checks)
        return self._hold(plan, checks, adm)

    async def admit_key(
        self, snap: Snapshot, key: KeyEntry, est: Estimate, worst_usd: float
    ) -> Hold:
        """The key's own layers and budgets only (a `/passthrough` call: no model), with
        `worst_usd` reserved against its budgets."""
        plans = self._plans(snap)
        plan = plans.gates.get((key.id, _KEY_ONLY))
        if plan is None:
            index = plans.index
            rates, budgets = index.key_rate(key), index.key_budgets(key)
            plan = _Plan(rates, budgets) if rates or budgets else _EMPTY
            if len(plans.gates) >= MAX_PLANS:
                plans.gates.clear()
            plans.gates[(key.id, _KEY_ONLY)] = plan
        if plan is _EMPTY:
            return NOOP_HOLD
        checks = _checks(plan, est, worst_usd)
        adm = await self.backend.acquire(checks)
        return self._hold(plan, checks, adm)

    async def admit_attempt(
        self,
        snap: Snapshot,
        key: KeyEntry,
        target: ModelEntry,
        est: Estimate,
        gate_alias: ModelEntry,
    ) -> Hold:
        plan = self.attempt_plan(snap, target, gate_alias)
        if plan is _EMPTY:
            return NOOP_HOLD
        worst = worst_case_usd(_pricing(target), est) if plan.spends else 0.0
        checks = _checks(plan, est, worst)
        backend = self.backend
        if type(backend) is MemoryBackend:
            adm = backend.admit(checks)
        else:
            adm = await backend.acquire(checks)
        return self._hold(plan, checks, adm)

    def _hold(self, plan: _Plan, checks: list[Check], adm: Admission) -> Hold:
        """The Hold of an admission, or the 429 of a refusal (nothing was taken)."""
        if adm.refused >= 0:
            rates, budgets = plan.rates, plan.budgets
            if adm.refused < len(rates):
                spec = rates[adm.refused]
                self._metrics.ratelimit_rejected(_MESSAGES[spec.dim][1], spec.layer)
                raise _rate_refusal(spec, adm)
            budget = budgets[adm.refused - len(rates)]
            self._metrics.budget_rejected(budget.scope)
            raise _budget_refusal(budget, adm, adm.refused)
        warnings = _NO_WARNINGS
        if plan.warn:
            warnings = [b.name for i, b in plan.warn if self._warn(b, adm, i, checks[i].amount)]
        return Hold(adm.ticket, self._ledger, plan, checks, adm, warnings)

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
            "period_start": format_rfc3339(adm.starts[0]),
            "period_resets_at": format_rfc3339(adm.ends[0]) if adm.ends[0] else None,
            "spent_usd": spent,
            "reserved_usd": reserved,
            "remaining_usd": max(0.0, round(spec.limit_usd - spent - reserved, 9)),
        }


#: the plan-cache slot of a key's own layers (never a model id: ids are not empty)
_KEY_ONLY = ""


def _checks(plan: _Plan, est: Estimate, worst_usd: float) -> list[Check]:
    """The plan's checks with this request's amounts: tokens = min(estimate, limit), spend =
    min(worst case in nano-USD, limit); requests and concurrency take 1."""
    checks = plan.checks.copy()
    if plan.tokens:
        total = est.prompt_tokens + est.completion_cap
        for i, t in plan.tokens:
            limit = t.limit
            checks[i] = Check(t.key, TOKENS, t.window, limit, total if total < limit else limit)
    if plan.spends:
        worst = nano_usd(worst_usd, ceil=True, cap=MAX_AMOUNT)
        for i, s in plan.spends:
            limit = s.limit
            amount = worst if worst < limit else limit
            checks[i] = Check(s.key, SPEND, s.window, limit, amount, s.enforce)
    return checks


def _pricing(model: ModelEntry) -> Any:
    return model.direct.pricing if model.direct is not None else None


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
            "period_resets_at": format_rfc3339(end) if end else None,
        },
    )
