"""Redis counter backend: one Lua call per admission and per finish, on the server's clock.

Counters are shared by every worker and replica pointing at the same Redis (single node or
sentinel-managed master). When Redis cannot be reached, `on_redis_failure: open` (default)
admits against this process's memory counters, `closed` refuses with 503; either way the
failure is counted (`failures`, `aisix_redis_failures_total{operation}`) and logged at most
once a minute, and Redis is not tried again for `RETRY_AFTER_FAILURE_S` so an outage does not
add a socket timeout to every request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aisix.errors import GatewayError
from aisix.limits import lua
from aisix.limits.base import CONCURRENCY, REQUESTS, ROLLBACK, SETTLE, SPEND, Admission, Check
from aisix.limits.memory import MemoryBackend
from aisix.limits.metrics import NO_METRICS, LimitMetrics
from aisix.limits.resp import RedisClient, RedisUnavailable, ReplyError, Script
from aisix.limits.windows import Clock
from aisix.settings import RedisConn

log = logging.getLogger("aisix.limits.redis")
RETRY_AFTER_FAILURE_S = 1.0
LOG_INTERVAL_S = 60.0
_REDIS_ERRORS = (RedisUnavailable, ReplyError, OSError, asyncio.TimeoutError)


class CountersUnavailable(GatewayError):
    """Redis is unreachable and `on_redis_failure: closed` refuses the request."""

    status = 503
    type = "service_unavailable"


class RedisBackend:
    def __init__(
        self,
        client: RedisClient,
        *,
        on_failure: str = "open",
        concurrency_ttl_secs: int = 300,
        clock: Clock = time.time,
        clock_offset_s: float = 0.0,
        metrics: LimitMetrics = NO_METRICS,
    ) -> None:
        self._metrics = metrics
        self._client = client
        self._acquire_script = Script(lua.ACQUIRE)
        self._finish_script = Script(lua.FINISH)
        self._fail_open = on_failure == "open"
        self._ttl = concurrency_ttl_secs
        self._clock = clock
        #: added to the Redis server clock inside the scripts; tests move time with it
        self.clock_offset_s = clock_offset_s
        self.fallback = MemoryBackend(clock, concurrency_ttl_secs)
        self.failures: dict[str, int] = {}
        self._skip_until = 0.0
        self._last_log = float("-inf")
        self._member_prefix = uuid.uuid4().hex[:12]
        self._members = itertools.count(1)
        self._orphans: set[asyncio.Future[None]] = set()

    def preload_spend(self, spend: Mapping[tuple[str, int], int]) -> None:
        return None  # spend is durable in Redis itself

    async def close(self) -> None:
        await self._client.close()

    async def acquire(self, checks: Sequence[Check], dry: bool = False) -> Admission:
        if self._clock() < self._skip_until:
            return self._unavailable(checks, dry)
        member = f"{self._member_prefix}:{next(self._members)}"
        args: list[Any] = [round(self.clock_offset_s * 1e6), member, self._ttl, int(dry)]
        for check in checks:
            args += (check.dim, check.window, check.limit, check.amount, int(check.enforce))
        keys = [c.key for c in checks]
        call = asyncio.ensure_future(self._client.evalsha(self._acquire_script, keys, args))
        try:
            raw = await asyncio.shield(call)
        except asyncio.CancelledError:
            # the caller is gone (client disconnect) but the script may still reserve: undo it
            call.add_done_callback(lambda done: self._undo_orphan(done, checks, member, dry))
            raise
        except _REDIS_ERRORS as exc:
            self.record_failure("acquire", exc)
            return self._unavailable(checks, dry)
        return self._admission(raw, checks, member, dry)

    def _admission(
        self, raw: list[Any], checks: Sequence[Check], member: str, dry: bool
    ) -> Admission:
        refused, now_us = int(raw[0]), int(raw[1])
        values = [int(v) for v in raw[2:]]
        used, reserved, starts, ends = values[0::4], values[1::4], values[2::4], values[3::4]
        ticket = None
        if refused < 0 and not dry:
            ticket = RedisTicket(self, _full_keys(checks, starts), tuple(checks), member)
        return Admission(refused, now_us / 1e6, used, reserved, starts, ends, ticket)

    def _undo_orphan(
        self, done: asyncio.Future[Any], checks: Sequence[Check], member: str, dry: bool
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        ticket = self._admission(done.result(), checks, member, dry).ticket
        if ticket is not None:
            self._orphans.add(asyncio.ensure_future(ticket.finish(ROLLBACK, 0, 0)))
            for task in [t for t in self._orphans if t.done()]:
                self._orphans.discard(task)

    async def run_finish(self, keys: list[str], args: list[Any]) -> None:
        try:
            await self._client.evalsha(self._finish_script, keys, args)
        except _REDIS_ERRORS as exc:
            # the reservations then lapse with their window; slots with concurrency_ttl_secs
            self.record_failure("settle", exc)

    def _unavailable(self, checks: Sequence[Check], dry: bool) -> Admission:
        if not self._fail_open:
            raise CountersUnavailable(
                "rate-limit counters are unavailable", headers={"Retry-After": "1"}
            )
        return self.fallback.admit(checks, dry)

    def record_failure(self, operation: str, exc: BaseException) -> None:
        self.failures[operation] = self.failures.get(operation, 0) + 1
        self._metrics.redis_failure(operation)
        now = self._clock()
        self._skip_until = now + RETRY_AFTER_FAILURE_S
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            policy = "local counters (fail open)" if self._fail_open else "refusing (fail closed)"
            log.warning("Redis unreachable during %s (%s); %s", operation, exc, policy)


def _full_keys(checks: Sequence[Check], starts: list[int]) -> tuple[str, ...]:
    return tuple(
        c.key if c.dim == CONCURRENCY else f"{c.key}:{start}"
        for c, start in zip(checks, starts, strict=True)
    )


class RedisTicket:
    __slots__ = ("_backend", "_checks", "_keys", "_member")

    def __init__(
        self, backend: RedisBackend, keys: tuple[str, ...], checks: tuple[Check, ...], member: str
    ) -> None:
        self._backend = backend
        self._keys = keys
        self._checks = checks
        self._member = member

    async def finish(self, mode: str, tokens: int, spend: int) -> None:
        keys: list[str] = []
        args: list[Any] = [mode, self._member]
        for key, check in zip(self._keys, self._checks, strict=True):
            if check.dim == REQUESTS and mode != ROLLBACK:
                continue  # admitted requests stay counted
            keys.append(key)
            actual = spend if check.dim == SPEND else tokens
            args += (check.dim, check.amount, actual if mode == SETTLE else 0)
        if keys:
            # shielded: a cancelled request (client gone) must still give its counters back
            await asyncio.shield(self._backend.run_finish(keys, args))


def redis_client(conn: RedisConn) -> RedisClient:
    """A client for `ratelimit.redis` (contract §2.4): single node or sentinel master."""
    return RedisClient(conn)
