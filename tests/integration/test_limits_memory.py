"""Memory counters with the SQLite usage ledger: spend survives a restart, usage reads (§10.4)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "limits"))
from limits_helpers import FakeClock, key, memory_governor, model, price, snapshot

from aisix.errors import BudgetExceeded, RateLimited
from aisix.events import RequestFinished, Usage
from aisix.limits.governor import Governor
from aisix.pricing import Estimate
from aisix.usage import UsageApi, UsageStore

PRICED = price(1_000_000, 1_000_000)  # $1 per token
EST3 = Estimate(prompt_tokens=1, completion_cap=2)  # worst case $3


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def event(
    k: str,
    m: str | None,
    at: float,
    tokens: tuple[int, int],
    cost: float,
    team: str | None = None,
    attempts: int = 1,
) -> RequestFinished:
    return RequestFinished(
        event_id=str(uuid.uuid4()),
        request_id="r",
        ts=at,
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        stream=False,
        status=200,
        outcome="success",
        latency_ms=1.0,
        client_ip=None,
        api_key_id=k,
        team_id=team,
        model_id=m,
        attempts=attempts,
        usage=Usage(tokens[0], tokens[1], 0, sum(tokens)),
        cost_usd=cost,
    )


def test_budget_spend_survives_a_restart(tmp_path: Path) -> None:
    k, m = key(budget={"limit_usd": 5, "period": "month"}), model("m1", pricing=PRICED)
    snap = snapshot([k], [m])
    clock = FakeClock(ts("2026-01-05T10:00"))

    async def first_life() -> None:
        store = UsageStore(tmp_path / "usage.db")
        await store.start()
        gov = memory_governor(clock, store)
        hold = await gov.admit_gate(snap, k, m, EST3, [m])
        await hold.settle(Usage(1, 2, 0, 3), 3.0)
        await store.close()

    async def second_life() -> dict[str, Any]:
        store = UsageStore(tmp_path / "usage.db")
        await store.start()
        gov = memory_governor(clock, store)
        with pytest.raises(BudgetExceeded) as err:
            await gov.admit_gate(snap, k, m, EST3, [m])
        assert err.value.extra["spent_usd"] == 3.0
        state = await gov.budget_state(snap, k)
        await store.close()
        assert state is not None
        return state

    asyncio.run(first_life())
    state = asyncio.run(second_life())
    assert state == {
        "limit_usd": 5,
        "period": "month",
        "mode": "block",
        "period_start": "2026-01-01T00:00:00Z",
        "period_resets_at": "2026-02-01T00:00:00Z",
        "spent_usd": 3.0,
        "reserved_usd": 0.0,
        "remaining_usd": 2.0,
    }
    clock.now = ts("2026-02-01T00:00")  # a new month starts from zero, also after a restart
    asyncio.run(first_life())


def test_parallel_admissions_exact_with_ledger(tmp_path: Path) -> None:
    k, m = key(rate_limit={"rpm": 30}), model("m1")
    snap = snapshot([k], [m])

    async def main() -> int:
        store = UsageStore(tmp_path / "usage.db")
        await store.start()
        gov = memory_governor(ledger=store)

        async def one() -> bool:
            try:
                await gov.admit_gate(snap, k, m, EST3, [m])
            except RateLimited:
                return False
            return True

        admitted = sum(await asyncio.gather(*(one() for _ in range(200))))
        await store.close()
        return admitted

    assert asyncio.run(main()) == 30


def test_usage_reads(tmp_path: Path) -> None:
    k1 = key("k1", budget={"limit_usd": 10, "period": "month"}, team="t")
    k2 = key("k2")
    m1, m2 = model("m1", pricing=PRICED), model("m2")
    snap = snapshot([k1, k2], [m1, m2])
    clock = FakeClock(ts("2026-01-05T09:30"))

    async def main() -> list[tuple[int, dict[str, Any]]]:
        store = UsageStore(tmp_path / "usage.db")
        await store.start()
        gov: Governor = memory_governor(clock, store)
        api = UsageApi(store, gov, clock=clock)
        store.on_event(event("k1", "m1", ts("2026-01-05T09:10"), (100, 50), 0.5, team="t"))
        store.on_event(event("k1", "m2", ts("2026-01-02T01:00"), (10, 5), 0.25, team="t"))
        store.on_event(event("k2", "m1", ts("2026-01-05T08:59"), (1, 1), 1.0))
        store.on_event(event("k2", None, ts("2026-01-05T08:00"), (0, 0), 0.0, attempts=0))
        await gov.admit_gate(snap, k1, m1, Estimate(1, 2), [m1])  # $3 in flight
        out = [
            await api.apikey_usage("k1", {}, snap),
            await api.apikey_usage("k1", {"from": "2026-01-05T09:05:00Z"}, snap),
            await api.usage({"group_by": "model", "from": "2026-01-01T00:00:00Z"}, snap),
            await api.usage({"group_by": "team"}, snap),
            await api.usage({"from": "2026-01-05T09:00:00Z", "to": "2026-01-05T08:00:00Z"}, snap),
            await api.apikey_usage("nope", {}, snap),
            await api.usage({"group_by": "provider"}, snap),
        ]
        await store.close()
        return out

    key_all, key_late, by_model, by_team, backwards, missing, bad_group = asyncio.run(main())
    assert key_all == (
        200,
        {
            "api_key_id": "k1",
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-05T10:00:00Z",
            "requests": 2,
            "prompt_tokens": 110,
            "completion_tokens": 55,
            "total_tokens": 165,
            "cost_usd": 0.75,
            "budget": {
                "limit_usd": 10,
                "period": "month",
                "mode": "block",
                "period_start": "2026-01-01T00:00:00Z",
                "period_resets_at": "2026-02-01T00:00:00Z",
                "spent_usd": 0.0,
                "reserved_usd": 3.0,
                "remaining_usd": 7.0,
            },
        },
    )
    assert key_late[1]["from"] == "2026-01-05T09:00:00Z" and key_late[1]["requests"] == 1
    assert by_model == (
        200,
        {
            "group_by": "model",
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-05T10:00:00Z",
            "rows": [
                {
                    "key": "m1",
                    "display_name": "m1",
                    "requests": 2,
                    "prompt_tokens": 101,
                    "completion_tokens": 51,
                    "total_tokens": 152,
                    "cost_usd": 1.5,
                },
                {
                    "key": "m2",
                    "display_name": "m2",
                    "requests": 1,
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "total_tokens": 15,
                    "cost_usd": 0.25,
                },
            ],
        },
    )
    assert [(r["key"], r["cost_usd"]) for r in by_team[1]["rows"]] == [(None, 1.0), ("t", 0.75)]
    assert backwards[0] == 400 and missing[0] == 404 and bad_group[0] == 400


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    drops: list[int] = []
    store = UsageStore(tmp_path / "usage.db", max_pending=2, on_drop=lambda: drops.append(1))
    for _ in range(5):
        store.on_event(event("k1", "m1", ts("2026-01-05T09:10"), (1, 1), 0.0))
    assert store.drops == 3 and len(drops) == 3
