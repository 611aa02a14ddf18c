"""Governor on the memory backend: layers, reservations, finishers, refusals (§9, §10)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from limits_helpers import EST, FakeClock, key, memory_governor, model, routing, snapshot

from aisix.errors import BudgetExceeded, RateLimited
from aisix.events import Usage
from aisix.limits.governor import NOOP_HOLD, Governor, Hold, ratelimit_headers
from aisix.pricing import Estimate

run = asyncio.run


async def try_gate(gov: Governor, snap: Any, k: Any, m: Any, est: Estimate = EST) -> Hold | None:
    try:
        return await gov.admit_gate(snap, k, m, est, [m])
    except (RateLimited, BudgetExceeded):
        return None


def test_nothing_configured_returns_shared_noop_hold() -> None:
    gov, k, m = memory_governor(), key(), model("m1")
    snap = snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    assert hold is NOOP_HOLD and hold.headers == [] and hold.budget_warnings == []
    assert run(gov.admit_attempt(snap, k, m, EST, m)) is NOOP_HOLD


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_parallel_admissions_admit_exactly_the_limit(limit: int) -> None:
    gov, k, m = memory_governor(), key(rate_limit={"rpm": limit}), model("m1")
    snap = snapshot([k], [m])

    async def main() -> list[Hold | None]:
        return await asyncio.gather(*(try_gate(gov, snap, k, m) for _ in range(200)))

    assert sum(h is not None for h in run(main())) == limit


def test_refusal_message_and_retry_after() -> None:
    clock = FakeClock(1_767_225_600.0 + 47.2)
    gov, k, m = memory_governor(clock), key(rate_limit={"rpm": 1}), model("m1")
    snap = snapshot([k], [m])
    run(gov.admit_gate(snap, k, m, EST, [m]))
    with pytest.raises(RateLimited) as err:
        run(gov.admit_gate(snap, k, m, EST, [m]))
    assert err.value.message == "request limit exceeded (requests)"
    assert err.value.headers == {"Retry-After": "13"}
    assert err.value.status == 429 and err.value.type == "rate_limit_exceeded"


def test_window_boundary_with_injected_clock() -> None:
    clock = FakeClock(1_767_225_600.0 + 59.9)
    gov, k, m = memory_governor(clock), key(rate_limit={"rpm": 2}), model("m1")
    snap = snapshot([k], [m])
    for _ in range(2):
        run(gov.admit_gate(snap, k, m, EST, [m]))
    assert run(try_gate(gov, snap, k, m)) is None
    clock.now += 0.1  # exactly the next window start
    assert run(try_gate(gov, snap, k, m)) is not None
    assert run(try_gate(gov, snap, k, m)) is not None
    assert run(try_gate(gov, snap, k, m)) is None


def test_rollback_gives_counts_back_fail_keeps_them() -> None:
    gov, k, m = memory_governor(), key(rate_limit={"rpm": 1}), model("m1")
    snap = snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    run(hold.rollback())
    run(hold.rollback())  # idempotent
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    run(hold.fail())
    assert run(try_gate(gov, snap, k, m)) is None


def test_later_layer_refusal_takes_nothing_from_earlier_layers() -> None:
    policies = {
        "p1": {
            "name": "tight",
            "scope": "model",
            "scope_ref": "m1",
            "window": "minute",
            "max_requests": 1,
        }
    }
    k, m = key(rate_limit={"rpm": 2, "concurrency": 5}), model("m1")
    gov, snap = memory_governor(), snapshot([k], [m], rate_policies=policies)
    run(gov.admit_gate(snap, k, m, EST, [m]))
    with pytest.raises(RateLimited) as err:
        run(gov.admit_gate(snap, k, m, EST, [m]))
    assert err.value.message == "request limit exceeded (requests) (policy 'tight')"
    assert err.value.extra == {"policy": {"id": "p1", "name": "tight"}}
    # the key's rpm=2 still has one request left: the refused one took nothing
    other = model("m2")
    snap2 = snapshot([k], [m, other], rate_policies=policies)
    assert run(try_gate(gov, snap2, k, other)) is not None
    assert run(try_gate(gov, snap2, k, other)) is None


@pytest.mark.parametrize("finish", ["settle", "fail", "rollback"])
def test_every_finisher_releases_concurrency(finish: str) -> None:
    gov, k, m = memory_governor(), key(rate_limit={"concurrency": 1}), model("m1")
    snap = snapshot([k], [m])
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    with pytest.raises(RateLimited) as err:
        run(gov.admit_gate(snap, k, m, EST, [m]))
    assert err.value.message == "concurrency limit exceeded"
    assert err.value.headers == {"Retry-After": "1"}
    if finish == "settle":
        run(hold.settle(Usage(1, 1, 0, 2), 0.0))
    else:
        run(getattr(hold, finish)())
    assert run(try_gate(gov, snap, k, m)) is not None


def test_tokens_reserve_estimate_and_settle_to_actual() -> None:
    gov, k, m = memory_governor(), key(rate_limit={"tpm": 100}), model("m1")
    snap = snapshot([k], [m])
    est = Estimate(10, 50)  # reserves 60
    first = run(gov.admit_gate(snap, k, m, est, [m]))
    assert run(try_gate(gov, snap, k, m, est)) is None  # 60 + 60 > 100
    run(first.settle(Usage(10, 5, 0, 15), 0.0))  # now 15 used
    second = run(gov.admit_gate(snap, k, m, est, [m]))  # 15 + 60 <= 100
    assert dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"25"
    run(second.fail())  # a failed request adds nothing
    assert run(try_gate(gov, snap, k, m, est)) is not None


def test_oversized_token_request_runs_only_in_an_unused_window() -> None:
    clock = FakeClock()
    gov, k, m = memory_governor(clock), key(rate_limit={"tpm": 100}), model("m1")
    snap = snapshot([k], [m])
    huge = Estimate(1000, 1000)
    hold = run(gov.admit_gate(snap, k, m, huge, [m]))  # capped at the limit
    with pytest.raises(RateLimited) as err:
        run(gov.admit_gate(snap, k, m, Estimate(1, 0), [m]))
    assert err.value.message == "token limit exceeded (tokens)"
    run(hold.settle(Usage(900, 900, 0, 1800), 0.0))
    clock.now += 60
    assert run(try_gate(gov, snap, k, m, huge)) is not None


def test_headers_show_the_strictest_bucket() -> None:
    clock = FakeClock(1_767_225_600.0 + 50)
    policies = {
        "p": {
            "name": "p",
            "scope": "api_key",
            "scope_ref": "k1",
            "window": "hour",
            "max_requests": 3,
        }
    }
    k, m = key(rate_limit={"rpm": 10, "rps": 100}), model("m1", rate_limit={"rpm": 5})
    gov, snap = memory_governor(clock), snapshot([k], [m], rate_policies=policies)
    hold = run(gov.admit_gate(snap, k, m, EST, [m]))
    assert hold.headers == [
        (b"x-ratelimit-limit-requests", b"3"),
        (b"x-ratelimit-remaining-requests", b"2"),
        (b"x-ratelimit-reset-requests", b"3550s"),
    ]
    strict_target = model("t1", rate_limit={"rpm": 1})
    alias = routing("r1", [strict_target])
    snap = snapshot([k], [m, strict_target, alias], rate_policies=policies)
    gate = run(gov.admit_gate(snap, k, alias, EST, [strict_target]))
    attempt = run(gov.admit_attempt(snap, k, strict_target, EST, alias))
    assert dict(ratelimit_headers(gate, attempt))[b"x-ratelimit-remaining-requests"] == b"0"
    assert dict(ratelimit_headers(gate, attempt))[b"x-ratelimit-reset-requests"] == b"10s"


def test_single_target_alias_takes_model_layers_once() -> None:
    gov, k, m = memory_governor(), key(), model("m1", rate_limit={"rpm": 2})
    snap = snapshot([k], [m])
    for _ in range(2):
        run(gov.admit_gate(snap, k, m, EST, [m]))
        assert run(gov.admit_attempt(snap, k, m, EST, m)) is NOOP_HOLD
    assert run(try_gate(gov, snap, k, m)) is None


def test_routing_target_limits_are_per_attempt() -> None:
    t1, t2 = model("t1", rate_limit={"rpm": 1}), model("t2")
    alias = routing("r1", [t1, t2], rate_limit={"rpm": 10})
    gov, k = memory_governor(), key()
    snap = snapshot([k], [t1, t2, alias])
    run(gov.admit_gate(snap, k, alias, EST, [t1, t2]))
    run(gov.admit_attempt(snap, k, t1, EST, alias))
    with pytest.raises(RateLimited):
        run(gov.admit_attempt(snap, k, t1, EST, alias))
    assert run(gov.admit_attempt(snap, k, t2, EST, alias)) is NOOP_HOLD


def test_team_member_policy_buckets_per_user() -> None:
    policies = {
        "tm": {
            "name": "tm",
            "scope": "team_member",
            "scope_ref": "t",
            "window": "minute",
            "max_requests": 1,
        }
    }
    a, b, anon = key("a", team="t", user="u1"), key("b", team="t", user="u2"), key("c", team="t")
    m = model("m1")
    gov, snap = memory_governor(), snapshot([a, b, anon], [m], rate_policies=policies)
    assert run(try_gate(gov, snap, a, m)) is not None
    assert run(try_gate(gov, snap, a, m)) is None
    assert run(try_gate(gov, snap, b, m)) is not None
    assert run(gov.admit_gate(snap, anon, m, EST, [m])) is NOOP_HOLD


def test_team_and_member_policies_share_buckets_across_keys() -> None:
    policies = {
        "team": {
            "name": "team",
            "scope": "team",
            "scope_ref": "t",
            "window": "day",
            "max_requests": 2,
        }
    }
    a, b, m = key("a", team="t"), key("b", team="t"), model("m1")
    gov, snap = memory_governor(), snapshot([a, b], [m], rate_policies=policies)
    assert run(try_gate(gov, snap, a, m)) and run(try_gate(gov, snap, b, m))
    assert run(try_gate(gov, snap, a, m)) is None
