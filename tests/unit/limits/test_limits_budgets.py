"""Budgets on the memory backend: worst-case reservation, settlement, periods, refusals (§10)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from limits_helpers import FakeClock, key, memory_governor, model, price, routing, snapshot

from aisix.errors import BudgetExceeded
from aisix.events import Usage
from aisix.limits.governor import Hold
from aisix.pricing import Estimate

run = asyncio.run
PRICED = price(1_000_000, 1_000_000)  # $1 per token: costs are token counts in USD
EST = Estimate(prompt_tokens=1, completion_cap=2)  # worst case $3


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_block_budget_refuses_with_contract_fields() -> None:
    clock = FakeClock(ts("2026-01-05T10:00:00"))
    k, m = key(budget={"limit_usd": 5, "period": "month"}), model("m1", pricing=PRICED)
    gov, snap = memory_governor(clock), snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    with pytest.raises(BudgetExceeded) as err:  # 0 spent + 3 reserved + 3 > 5
        run(gov.admit_gate(snap, k, m, EST, [m]))
    run(hold.settle(Usage(1, 1, 0, 2), 2.0))
    run(gov.admit_gate(snap, k, m, EST, [m]))  # 2 spent + 3 <= 5
    with pytest.raises(BudgetExceeded) as err:
        run(gov.admit_gate(snap, k, m, EST, [m]))
    e = err.value
    assert (e.status, e.type, e.code) == (429, "billing_error", "budget_exceeded")
    assert e.message == 'budget exceeded for api_key "k1"'
    assert e.extra == {
        "scope": "api_key",
        "scope_ref": "k1",
        "limit_usd": 5,
        "spent_usd": 2.0,
        "period": "month",
        "period_resets_at": "2026-02-01T00:00:00Z",
    }
    assert e.headers == {"Retry-After": str(int(ts("2026-02-01") - ts("2026-01-05T10:00")))}


def test_parallel_spend_never_exceeds_the_limit() -> None:
    k, m = key(budget={"limit_usd": 10, "period": "total"}), model("m1", pricing=PRICED)
    gov, snap = memory_governor(), snapshot([k], [m])

    async def one() -> float:
        try:
            hold = await gov.admit_gate(snap, k, m, EST, [m])
        except BudgetExceeded as exc:
            assert "Retry-After" not in exc.headers and exc.extra["period_resets_at"] is None
            return 0.0
        await asyncio.sleep(0)
        await hold.settle(Usage(1, 2, 0, 3), 3.0)  # actual = worst case
        return 3.0

    async def main() -> float:
        spent = 0.0
        for _ in range(3):
            spent += sum(await asyncio.gather(*(one() for _ in range(200))))
        return spent

    assert run(main()) == 9.0  # three $3 requests fit in $10, never a fourth


def test_fail_releases_budget_reservation() -> None:
    k, m = key(budget={"limit_usd": 3, "period": "day"}), model("m1", pricing=PRICED)
    gov, snap = memory_governor(), snapshot([k], [m])
    for _ in range(5):
        run(run(gov.admit_gate(snap, k, m, EST, [m])).fail())


def test_reservation_capped_at_limit_runs_only_on_an_unused_budget() -> None:
    k, m = key(budget={"limit_usd": 2, "period": "day"}), model("m1", pricing=PRICED)
    gov, snap = memory_governor(), snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))  # worst $3, reserves $2
    run(hold.settle(Usage(1, 0, 0, 1), 1.0))
    with pytest.raises(BudgetExceeded):
        run(gov.admit_gate(snap, k, m, EST, [m]))


@pytest.mark.parametrize(
    ("period", "before", "after"),
    [
        ("day", "2026-01-05T23:59:59", "2026-01-06T00:00:00"),
        ("week", "2026-01-11T23:59:59", "2026-01-12T00:00:00"),  # Sunday -> Monday
        ("month", "2026-01-31T23:59:59", "2026-02-01T00:00:00"),
    ],
)
def test_period_boundaries_reset_spend(period: str, before: str, after: str) -> None:
    clock = FakeClock(ts(before) - 3600)
    k, m = key(budget={"limit_usd": 3, "period": period}), model("m1", pricing=PRICED)
    gov, snap = memory_governor(clock), snapshot([k], [m])
    run(run(gov.admit_gate(snap, k, m, EST, [m])).settle(Usage(1, 2, 0, 3), 3.0))
    clock.now = ts(before)
    with pytest.raises(BudgetExceeded) as err:
        run(gov.admit_gate(snap, k, m, EST, [m]))
    assert err.value.extra["period_resets_at"] == after.replace("T", "T")[:19] + "Z"
    assert err.value.headers == {"Retry-After": "1"}
    clock.now = ts(after)
    run(gov.admit_gate(snap, k, m, EST, [m]))


def test_warn_budget_never_refuses_and_lists_its_name() -> None:
    policies = {
        "bp": {
            "name": "team-soft",
            "scope": "team",
            "scope_ref": "t",
            "limit_usd": 4,
            "period": "day",
            "mode": "warn",
        }
    }
    k, m = key(team="t"), model("m1", pricing=PRICED)
    gov, snap = memory_governor(), snapshot([k], [m], budget_policies=policies)
    first = run(gov.admit_gate(snap, k, m, EST, [m]))
    assert first.budget_warnings == []
    second = run(gov.admit_gate(snap, k, m, EST, [m]))  # 3 + 3 > 4
    assert second.budget_warnings == ["team-soft"]


def test_gate_reserves_at_the_dearest_candidate_and_attempts_at_the_target() -> None:
    cheap, dear = model("cheap", pricing=price(0, 1_000_000)), model("dear", pricing=PRICED)
    alias = routing("r", [cheap, dear])
    policies = {
        "user": {"name": "u", "scope": "user", "scope_ref": "u1", "limit_usd": 5, "period": "day"},
        "pk": {
            "name": "pk",
            "scope": "provider_key",
            "scope_ref": "pk1",
            "limit_usd": 4,
            "period": "day",
        },
        "mb": {
            "name": "mb",
            "scope": "model",
            "scope_ref": "cheap",
            "limit_usd": 1.5,
            "period": "day",
        },
    }
    k = key(user="u1")
    gov, snap = memory_governor(), snapshot([k], [cheap, dear, alias], budget_policies=policies)
    gate = run(gov.admit_gate(snap, k, alias, EST, [cheap, dear]))  # user: $3 reserved
    with pytest.raises(BudgetExceeded) as err:  # user: 3 + 3 > 5
        run(gov.admit_gate(snap, k, alias, EST, [cheap, dear]))
    assert err.value.extra["scope"] == "user"
    cheap_try = run(gov.admit_attempt(snap, k, cheap, EST, alias))  # $2 worst, capped at $1.5
    with pytest.raises(BudgetExceeded) as err:
        run(gov.admit_attempt(snap, k, cheap, EST, alias))
    assert err.value.message == 'budget exceeded for model "cheap"'
    run(cheap_try.fail())
    attempt: Hold = run(gov.admit_attempt(snap, k, dear, EST, alias))  # pk: $3 of $4
    with pytest.raises(BudgetExceeded) as err:
        run(gov.admit_attempt(snap, k, dear, EST, alias))
    assert err.value.extra["scope"] == "provider_key"
    run(attempt.settle(Usage(1, 0, 0, 1), 1.0))
    run(gate.settle(Usage(1, 0, 0, 1), 1.0))
    run(gov.admit_attempt(snap, k, dear, EST, alias))  # pk: 1 spent + 3 <= 4
