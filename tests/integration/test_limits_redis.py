"""Redis counter backend against a real redis-server: exactness across governors (= processes),
server-clock windows, finishers, spend durability, and what happens when Redis is down."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "limits"))
from limits_helpers import EST, key, model, price, snapshot

from aisix.errors import BudgetExceeded, RateLimited
from aisix.events import Usage
from aisix.limits.base import SPEND, Check
from aisix.limits.governor import Governor, Hold
from aisix.limits.redis import CountersUnavailable, RedisBackend, redis_client
from aisix.limits.windows import DAY, MONTH, WEEK, bounds
from aisix.pricing import Estimate
from aisix.settings import RateLimitSettings, RedisConn
from fakes.redis_server import RedisServer, unused_port

PRICED = price(1_000_000, 1_000_000)  # $1 per token
EST3 = Estimate(prompt_tokens=1, completion_cap=2)  # worst case $3


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def with_governors(redis_server: RedisServer) -> Callable[..., Any]:
    """Run `body(*governors)` with `n` independent governors, each with its own client."""

    def runner(body: Callable[..., Awaitable[Any]], n: int = 1, **backend: Any) -> Any:
        async def main() -> Any:
            clients = [redis_client(RedisConn(url=redis_server.url)) for _ in range(n)]
            await clients[0].execute("FLUSHALL")
            govs = [
                Governor(RateLimitSettings(), RedisBackend(c, **backend), None) for c in clients
            ]
            try:
                return await body(*govs)
            finally:
                for gov in govs:
                    await gov.close()

        return asyncio.run(main())

    return runner


async def try_gate(gov: Governor, snap: Any, k: Any, m: Any, est: Estimate = EST) -> Hold | None:
    try:
        return await gov.admit_gate(snap, k, m, est, [m])
    except (RateLimited, BudgetExceeded):
        return None


async def set_server_time(govs: tuple[Governor, ...], target: float) -> None:
    """Shift the scripts' clock so the Redis server's `now` reads `target`."""
    for gov in govs:
        backend = gov.backend
        assert isinstance(backend, RedisBackend)
        sec, usec = await backend._client.execute("TIME")
        backend.clock_offset_s = target - (int(sec) + int(usec) / 1e6)


def test_parallel_admissions_admit_exactly_the_limit(with_governors: Any) -> None:
    k, m = key(rate_limit={"rpm": 17}), model("m1")
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> int:
        holds = await asyncio.gather(*(try_gate(gov, snap, k, m) for _ in range(200)))
        return sum(h is not None for h in holds)

    assert with_governors(body) == 17


def test_two_governors_share_one_limit_and_one_budget(with_governors: Any) -> None:
    k = key(rate_limit={"rpm": 25}, budget={"limit_usd": 10, "period": "month"})
    m = model("m1", pricing=PRICED)
    snap = snapshot([k], [m])

    async def one(gov: Governor) -> tuple[int, float]:
        try:
            hold = await gov.admit_gate(snap, k, m, EST3, [m])
        except RateLimited:
            return 1, 0.0
        except BudgetExceeded:
            return 2, 0.0
        await hold.settle(Usage(1, 2, 0, 3), 3.0)
        return 0, 3.0

    async def body(a: Governor, b: Governor) -> tuple[list[tuple[int, float]], Any]:
        results = []
        for _ in range(3):
            results += await asyncio.gather(*(one(g) for _ in range(100) for g in (a, b)))
        return results, await a.budget_state(snap, k)

    results, state = with_governors(body, n=2)
    assert sum(cost for _, cost in results) == 9.0  # never a fourth $3 request in $10
    assert sum(1 for code, _ in results if code == 0) == 3
    assert state["spent_usd"] == 9.0 and state["reserved_usd"] == 0.0

    k2, m2 = key("k2", rate_limit={"rpm": 25}), model("m2")
    snap2 = snapshot([k2], [m2])

    async def rpm(a: Governor, b: Governor) -> int:
        holds = await asyncio.gather(
            *(try_gate(g, snap2, k2, m2) for _ in range(100) for g in (a, b))
        )
        return sum(h is not None for h in holds)

    assert with_governors(rpm, n=2) == 25


def test_rollback_fail_and_concurrency_release(with_governors: Any) -> None:
    k, m = key(rate_limit={"rpm": 2, "concurrency": 1}), model("m1")
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        hold = await gov.admit_gate(snap, k, m, EST, [m])
        assert await try_gate(gov, snap, k, m) is None  # concurrency 1
        await hold.rollback()
        await hold.rollback()
        hold = await gov.admit_gate(snap, k, m, EST, [m])  # rollback gave the request back
        await hold.fail()
        hold = await gov.admit_gate(snap, k, m, EST, [m])
        await hold.settle(Usage(1, 1, 0, 2), 0.0)
        with pytest.raises(RateLimited) as err:  # fail and settle kept their counts
            await gov.admit_gate(snap, k, m, EST, [m])
        assert err.value.message == "request limit exceeded (requests)"

    with_governors(body)


def test_tokens_settle_to_actual(with_governors: Any) -> None:
    k, m = key(rate_limit={"tpm": 100}), model("m1")
    snap = snapshot([k], [m])
    est = Estimate(10, 50)

    async def body(gov: Governor) -> None:
        first = await gov.admit_gate(snap, k, m, est, [m])
        assert await try_gate(gov, snap, k, m, est) is None
        await first.settle(Usage(10, 5, 0, 15), 0.0)
        second = await gov.admit_gate(snap, k, m, est, [m])
        assert dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"25"
        await second.fail()
        assert await try_gate(gov, snap, k, m, est) is not None

    with_governors(body)


def test_window_boundary_on_the_server_clock(with_governors: Any) -> None:
    k, m = key(rate_limit={"rpm": 2}), model("m1")
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        boundary = (datetime.now(UTC).timestamp() // 60 + 10) * 60
        await set_server_time((gov,), boundary - 0.5)
        for _ in range(2):
            await gov.admit_gate(snap, k, m, EST, [m])
        with pytest.raises(RateLimited) as err:
            await gov.admit_gate(snap, k, m, EST, [m])
        assert err.value.headers == {"Retry-After": "1"}
        await set_server_time((gov,), boundary + 0.05)
        assert await try_gate(gov, snap, k, m) is not None

    with_governors(body)


@pytest.mark.parametrize("code", [DAY, WEEK, MONTH])
def test_lua_periods_match_python(with_governors: Any, code: int) -> None:
    moments = [
        "2024-02-29T23:59:59.5",
        "2024-03-01T00:00:00.1",
        "2025-12-31T23:59:59.5",
        "2026-01-01T00:00:00.1",
        "2026-01-04T23:59:59.5",
        "2026-01-05T00:00:00.1",
        "2100-02-28T12:00:00",
        "2000-02-29T12:00:00",
    ]

    async def body(gov: Governor) -> None:
        for moment in moments:
            at = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()
            await set_server_time((gov,), at)
            adm = await gov.backend.acquire([Check("aisix:rl:{t}:spend", SPEND, code, 1, 0)], True)
            assert (adm.starts[0], adm.ends[0]) == bounds(code, at), moment

    with_governors(body)


def test_spend_survives_a_new_governor(with_governors: Any, redis_server: RedisServer) -> None:
    k, m = key(budget={"limit_usd": 5, "period": "total"}), model("m1", pricing=PRICED)
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        hold = await gov.admit_gate(snap, k, m, EST3, [m])
        await hold.settle(Usage(1, 2, 0, 3), 3.0)
        restarted = Governor(
            RateLimitSettings(), RedisBackend(redis_client(RedisConn(url=redis_server.url))), None
        )
        with pytest.raises(BudgetExceeded) as err:
            await restarted.admit_gate(snap, k, m, EST3, [m])
        assert err.value.extra["spent_usd"] == 3.0
        await restarted.close()

    with_governors(body)


def test_concurrency_slots_expire_after_ttl(with_governors: Any) -> None:
    k, m = key(rate_limit={"concurrency": 1}), model("m1")
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        now = datetime.now(UTC).timestamp()
        await gov.admit_gate(snap, k, m, EST, [m])  # leaked: never finished
        assert await try_gate(gov, snap, k, m) is None
        await set_server_time((gov,), now + 5)
        assert await try_gate(gov, snap, k, m) is not None

    with_governors(body, concurrency_ttl_secs=2)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_unreachable_redis(mode: str) -> None:
    k, m = key(rate_limit={"rpm": 1}), model("m1")
    snap = snapshot([k], [m])

    async def main() -> None:
        client = redis_client(RedisConn(url=f"redis://127.0.0.1:{unused_port()}/0"))
        backend = RedisBackend(client, on_failure=mode)
        gov = Governor(RateLimitSettings(), backend, None)
        if mode == "closed":
            with pytest.raises(CountersUnavailable) as err:
                await gov.admit_gate(snap, k, m, EST, [m])
            assert err.value.status == 503
        else:  # local counters still enforce the limit
            hold = await gov.admit_gate(snap, k, m, EST, [m])
            assert await try_gate(gov, snap, k, m) is None
            await hold.settle(Usage(1, 1, 0, 2), 0.0)
        assert backend.failures == {"acquire": 1}  # then Redis is not retried for a second
        await gov.close()

    asyncio.run(main())


def test_cancelled_admission_gives_everything_back(with_governors: Any) -> None:
    k, m = key(rate_limit={"rpm": 1, "concurrency": 1}), model("m1")
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        task = asyncio.create_task(gov.admit_gate(snap, k, m, EST, [m]))
        for _ in range(3):
            await asyncio.sleep(0)  # the script call is now in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = asyncio.get_running_loop().time() + 5
        while await try_gate(gov, snap, k, m) is None:
            assert asyncio.get_running_loop().time() < deadline, "reservation never released"
            await asyncio.sleep(0.01)

    with_governors(body)


def test_absurd_usage_and_cost_settle_without_a_script_error(with_governors: Any) -> None:
    """Issue 12 item 3: `prompt_tokens: 2**63` from an upstream made the settle script fail
    (and count as "Redis unreachable"); amounts are clamped to what Lua keeps exact."""
    k = key(rate_limit={"tpm": 10**12}, budget={"limit_usd": 1e9, "period": "total"})
    m = model("m1", pricing=price(1e6, 1e6))
    snap = snapshot([k], [m])

    async def body(gov: Governor) -> None:
        backend = gov.backend
        assert isinstance(backend, RedisBackend)
        hold = await gov.admit_gate(snap, k, m, Estimate(10**12, 10**12), [m])
        await hold.settle(Usage(2**63, 2**63, 0, 2**64), float("inf"))
        assert backend.failures == {}
        state = await gov.budget_state(snap, k)
        assert state is not None and 0 < state["spent_usd"] < 1e9
        # the counters still answer: the next admission is judged, not failed open
        again = await try_gate(gov, snap, k, m, EST3)
        assert backend.failures == {}
        if again is not None:
            await again.rollback()

    with_governors(body)
