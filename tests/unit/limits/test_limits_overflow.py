"""Issue 12 item 1: no number in a resource or a request can make plan compilation raise.

`limit_usd: 1e300` on a budget nobody used made every model request answer 500 (an
OverflowError while compiling the snapshot's budget specs). Validation now bounds the field;
these tests build values past validation (as an old store row would be) and check that the
governor still admits, clamping what it cannot represent.
"""

from __future__ import annotations

import asyncio

from limits_helpers import EST, key, memory_governor, model, price, snapshot

from aisix.events import Usage
from aisix.limits.base import NANO_PER_USD
from aisix.limits.layers import MAX_AMOUNT, MAX_NANO_USD, budget_spec
from aisix.pricing import estimate_request
from aisix.resources import Budget, BudgetPolicy

run = asyncio.run


def huge_policy(limit: float) -> BudgetPolicy:
    return BudgetPolicy.model_construct(
        name="huge", scope="team", scope_ref="nobody", limit_usd=limit, period="day", mode="block"
    )


def test_a_huge_budget_for_an_unused_team_does_not_break_other_requests() -> None:
    k, m = key(), model("m1", pricing=price(1, 1))
    snap = snapshot([k], [m])
    object.__setattr__(snap, "budget_policies", {"b1": huge_policy(1e300)})
    gov = memory_governor()
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    run(hold.settle(Usage(1, 1, 0, 2), 0.0))


def test_a_huge_budget_on_the_key_itself_clamps_and_admits() -> None:
    k, m = key(team="t"), model("m1", pricing=price(1, 1))
    snap = snapshot([k], [m])
    object.__setattr__(
        snap,
        "budget_policies",
        {
            "b1": BudgetPolicy.model_construct(
                name="huge",
                scope="team",
                scope_ref="t",
                limit_usd=float("inf"),
                period="day",
                mode="block",
            )
        },
    )
    gov = memory_governor()
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    run(hold.settle(Usage(1, 1, 0, 2), 0.5))


def test_budget_spec_clamps_to_a_64_bit_integer() -> None:
    for limit in (1e300, float("inf"), float("nan"), 1e10):
        budget = Budget.model_construct(limit_usd=limit, period="day")
        spec = budget_spec("b", budget, "t", "r", "n")
        assert 0 <= spec.limit <= MAX_NANO_USD < 2**63
    ordinary = budget_spec("b", Budget(limit_usd=2.5, period="day"), "t", "r", "n")
    assert ordinary.limit == 2.5 * NANO_PER_USD


def test_a_huge_max_tokens_is_clamped_in_the_estimate() -> None:
    est = estimate_request({"messages": [], "max_tokens": 10**400}, 1024, False)
    assert est.completion_cap <= 10**12
    k, m = key(budget={"limit_usd": 5, "period": "day"}), model("m1", pricing=price(1e6, 1e6))
    gov, snap = memory_governor(), snapshot([k], [m])
    try:
        run(gov.admit_gate(snap, k, m, est, [m]))
    except Exception as exc:  # a refusal is fine, a crash is not
        assert getattr(exc, "status", None) == 429, repr(exc)


def test_a_non_finite_cost_settles_without_raising() -> None:
    k, m = key(budget={"limit_usd": 5, "period": "day"}), model("m1", pricing=price(1, 1))
    snap = snapshot([k], [m])
    for cost, spent in (
        (float("inf"), MAX_AMOUNT),
        (float("nan"), 0),
        (1e300, MAX_AMOUNT),
        (-1, 0),
    ):
        gov = memory_governor()
        hold = run(gov.admit_gate(snap, k, m, EST, [m]))
        run(hold.settle(Usage(1, 1, 0, 2), cost))
        state = run(gov.budget_state(snap, k))
        assert state is not None and state["spent_usd"] == spent / NANO_PER_USD
