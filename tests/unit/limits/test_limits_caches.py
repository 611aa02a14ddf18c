"""The governor's per-snapshot plan cache and the cached window bounds answer exactly as the
uncached code would: new snapshots, windows rolling over, clocks going back, header ties."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest
from limits_helpers import EST, FakeClock, key, memory_governor, model, price, snapshot

from aisix.errors import BudgetExceeded, RateLimited
from aisix.events import Usage
from aisix.limits import governor as governor_module
from aisix.limits import windows
from aisix.limits.base import NANO_PER_USD
from aisix.limits.governor import Governor, Hold, ratelimit_headers
from aisix.limits.windows import DAY, HOUR, MINUTE, MONTH, SECOND, TOTAL, WEEK, bounds
from aisix.pricing import Estimate

run = asyncio.run
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


async def try_gate(gov: Governor, snap: Any, k: Any, m: Any, est: Estimate = EST) -> Hold | None:
    try:
        return await gov.admit_gate(snap, k, m, est, [m])
    except (RateLimited, BudgetExceeded):
        return None


def admitted(gov: Governor, snap: Any, k: Any, m: Any, tries: int = 20) -> int:
    return sum(run(try_gate(gov, snap, k, m)) is not None for _ in range(tries))


def test_new_snapshot_replaces_cached_limits() -> None:
    clock = FakeClock(T0 + 1)
    gov, m = memory_governor(clock), model("m1")
    k2 = key(rate_limit={"rpm": 2})
    first = snapshot([k2], [m])
    assert admitted(gov, first, k2, m) == 2
    # same key id, new snapshot with a higher limit: the counter is shared, the limit is new
    k5 = key(rate_limit={"rpm": 5})
    second = snapshot([k5], [m])
    assert admitted(gov, second, k5, m) == 3
    # and a snapshot without any limit admits everything (the plan is the empty one)
    unlimited = key()
    third = snapshot([unlimited], [m])
    assert admitted(gov, third, unlimited, m) == 20
    # a request still running on an older snapshot keeps that snapshot's plan
    assert admitted(gov, second, k5, m) == 0


def test_plan_is_reused_per_snapshot_key_and_alias() -> None:
    gov, k = memory_governor(), key(rate_limit={"rpm": 9})
    m1, m2 = model("m1", rate_limit={"tpm": 1000}), model("m2")
    snap = snapshot([k], [m1, m2])
    plan = gov.gate_plan(snap, k, m1)
    assert gov.gate_plan(snap, k, m1) is plan
    assert gov.gate_plan(snap, k, m2) is not plan
    assert gov.attempt_plan(snap, m1, m2) is gov.attempt_plan(snap, m1, m2)
    assert gov.gate_plan(snapshot([k], [m1, m2]), k, m1) is not plan


def test_plan_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(governor_module, "MAX_PLANS", 3)
    models = [model(f"m{i}", rate_limit={"rpm": 2}) for i in range(8)]
    gov, k = memory_governor(), key(rate_limit={"rpm": 100})
    snap = snapshot([k], models)
    for _ in range(2):
        for m in models:
            assert run(try_gate(gov, snap, k, m)) is not None
    for m in models:  # each model's own limit of 2 still holds across cache restarts
        assert run(try_gate(gov, snap, k, m)) is None
    assert len(gov._plans(snap).gates) <= 3


def test_token_and_spend_amounts_are_per_request() -> None:
    gov = memory_governor()
    k = key(rate_limit={"tpm": 100}, budget={"limit_usd": 1.0, "period": "total"})
    m = model("m1", pricing=price(1_000_000, 0))  # $1 per prompt token
    snap = snapshot([k], [m])
    small = run(gov.admit_gate(snap, k, m, Estimate(0, 10), [m]))
    assert dict(small.headers)[b"x-ratelimit-remaining-tokens"] == b"90"
    big = run(gov.admit_gate(snap, k, m, Estimate(0, 50), [m]))
    assert dict(big.headers)[b"x-ratelimit-remaining-tokens"] == b"40"
    run(gov.admit_gate(snap, k, m, Estimate(1, 0), [m]))  # $1 worst case against $1: fits
    with pytest.raises(BudgetExceeded):  # ...and the next $1 does not
        run(gov.admit_gate(snap, k, m, Estimate(1, 0), [m]))
    # the shared template checks were not changed by the per-request amounts
    plan = gov.gate_plan(snap, k, m)
    assert [c.amount for c in plan.checks] == [1, 0]


def test_windows_roll_over_with_injected_clock_on_cached_bounds() -> None:
    clock = FakeClock(T0 + 59.5)
    gov, k = memory_governor(clock), key(rate_limit={"rpm": 1, "rps": 5})
    m = model("m1", rate_limit={"tpm": 60})
    snap = snapshot([k], [m])
    est = Estimate(10, 20)
    assert run(try_gate(gov, snap, k, m, est)) is not None
    assert run(try_gate(gov, snap, k, m, est)) is None  # rpm 1
    for _ in range(3):  # next minute each time: the request count and tokens start over
        clock.now += 60
        hold = run(gov.admit_gate(snap, k, m, est, [m]))
        assert dict(hold.headers)[b"x-ratelimit-remaining-tokens"] == b"30"
        run(hold.settle(Usage(1, 1, 0, 2), 0.0))
        assert run(try_gate(gov, snap, k, m, est)) is None
    clock.now -= 60  # back into an earlier window: computed again, not served from the cache
    start = math.floor(clock.now / 60) * 60
    assert bounds(MINUTE, clock.now) == (start, start + 60)


def test_settled_spend_lands_in_its_period_after_rollover() -> None:
    clock = FakeClock(T0 + DAY - 1)
    ledger = RecordingLedger()
    gov = memory_governor(clock, ledger)
    k = key(budget={"limit_usd": 10.0, "period": "day"})
    m = model("m1", pricing=price(1_000_000, 0))
    snap = snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, Estimate(1, 0), [m]))
    clock.now += 2  # the next day: the settle still books on the admission's day
    run(hold.settle(Usage(1, 0, 0, 1), 1.0))
    assert ledger.added == [("aisix:rl:{budget:key:k1}:spend.day", int(T0), NANO_PER_USD)]
    state = run(gov.budget_state(snap, k))
    assert state is not None and state["spent_usd"] == 0.0


class RecordingLedger:
    def __init__(self) -> None:
        self.added: list[tuple[str, int, int]] = []

    def load_spend(self) -> dict[tuple[str, int], int]:
        return {}

    def add_spend(self, key: str, period_start: int, nano_usd: int) -> None:
        self.added.append((key, period_start, nano_usd))


def test_header_ties_go_to_the_first_hold_and_bucket() -> None:
    k = key(rate_limit={"rpm": 10, "rph": 10})
    m1, m2 = model("m1", rate_limit={"rpm": 10}), model("m2", rate_limit={"rph": 10})
    gov, snap = memory_governor(FakeClock(T0 + 30)), snapshot([k], [m1, m2])
    gate = run(gov.admit_gate(snap, k, m1, EST, [m2]))
    attempt = run(gov.admit_attempt(snap, k, m2, EST, m1))
    headers = dict(ratelimit_headers(gate, attempt))
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    assert headers[b"x-ratelimit-reset-requests"] == b"30s"  # the key's rpm: first of the gate
    headers = dict(ratelimit_headers(attempt, gate))
    assert headers[b"x-ratelimit-reset-requests"] == b"3570s"  # m2's rph: first hold now
    for hold in (gate, attempt):
        merged = dict(ratelimit_headers(hold))
        (remaining, limit, reset) = hold.strictest()["r"]
        assert merged[b"x-ratelimit-remaining-requests"] == str(remaining).encode()
        assert merged[b"x-ratelimit-limit-requests"] == str(limit).encode()
        assert merged[b"x-ratelimit-reset-requests"] == f"{reset}s".encode()


def reference_bounds(code: int, now: float) -> tuple[int, int]:
    return windows._compute(code, now)


@pytest.mark.parametrize("code", [SECOND, MINUTE, HOUR, DAY, 7, WEEK, MONTH, TOTAL])
def test_cached_bounds_match_the_computation_at_every_edge(code: int) -> None:
    rng = random.Random(code)
    moments = [T0 + rng.uniform(-40 * DAY, 40 * DAY) for _ in range(300)]
    for edge in [T0, T0 + DAY, T0 + 31 * DAY, 1_767_571_200.0, 1_767_225_660.0]:
        below = edge
        for _ in range(4):
            below = math.nextafter(below, -math.inf)
            moments += [below, edge]
        moments.append(math.nextafter(edge, math.inf))
    # forwards, backwards and shuffled: the cache must never answer for the wrong window
    for order in (
        sorted(moments),
        sorted(moments, reverse=True),
        rng.sample(moments, len(moments)),
    ):
        windows._spans.clear()
        for now in order:
            assert bounds(code, now) == reference_bounds(code, now), (code, now)


def test_seconds_until_is_ceil_at_least_one() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        end = rng.choice([60, 3600, 1_767_225_660])
        now = end - rng.choice([rng.uniform(-5, 5), rng.uniform(0, 4000), rng.randint(-3, 70)])
        assert windows.seconds_until(end, now) == max(1, math.ceil(end - now)), (end, now)
