"""In-process counter backend: exact within one process, no I/O and no await per request.

Request and token counters keep only their current window (`[start, value]`); a finisher
whose window has already rolled over leaves the new window alone. Concurrency slots are
members with an expiry (a leaked slot frees itself after `concurrency_ttl_secs`). Budget spend
is `[period_start, spent, reserved]` per spend key, seeded from the SQLite spend ledger at
startup (`preload_spend`). Also the fail-open fallback of the Redis backend.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

from aisix.limits.base import CONCURRENCY, ROLLBACK, SETTLE, SPEND, TOKENS, Admission, Check
from aisix.limits.windows import Clock, bounds


class MemoryBackend:
    """Counters in dicts; every method body runs without yielding to the event loop."""

    def __init__(self, clock: Clock = time.time, concurrency_ttl_secs: int = 300) -> None:
        self._clock = clock
        self._ttl = concurrency_ttl_secs
        self._windows: dict[str, list[int]] = {}
        self._spend: dict[str, list[int]] = {}
        self._slots: dict[str, dict[int, float]] = {}
        self._preloaded: dict[tuple[str, int], int] = {}
        self._members = itertools.count(1)

    def preload_spend(self, spend: Mapping[tuple[str, int], int]) -> None:
        self._preloaded.update(spend)

    async def close(self) -> None:
        return None

    async def acquire(self, checks: Sequence[Check], dry: bool = False) -> Admission:
        return self.admit(checks, dry)

    def admit(self, checks: Sequence[Check], dry: bool = False) -> Admission:
        now = self._clock()
        n = len(checks)
        used = [0] * n
        reserved = [0] * n
        starts = [0] * n
        ends = [0] * n
        windows = self._windows
        refused = -1
        for i, check in enumerate(checks):
            dim = check.dim
            held = 0
            if dim == CONCURRENCY:
                current = self._live_slots(check, now)
            else:
                start, end = bounds(check.window, now)
                starts[i] = start
                ends[i] = end
                if dim == SPEND:
                    state = self._spend.get(check.key)
                    if state is None or state[0] != start:
                        state = self._spend_state(check.key, start)
                    current = state[1]
                    reserved[i] = held = state[2]
                else:
                    window = windows.get(check.key)
                    current = window[1] if window is not None and window[0] == start else 0
            used[i] = current
            if refused < 0 and current + held + check.amount > check.limit and check.enforce:
                refused = i
        if refused >= 0 or dry:
            return Admission(refused, now, used, reserved, starts, ends, None)
        member = next(self._members)
        for i, check in enumerate(checks):
            dim = check.dim
            if dim == CONCURRENCY:
                slots = self._slots.get(check.key)
                if slots is None:
                    slots = self._slots[check.key] = {}
                slots[member] = now + self._ttl
            elif dim == SPEND:
                self._spend[check.key][2] += check.amount
            else:
                start = starts[i]
                window = windows.get(check.key)
                if window is None or window[0] != start:
                    windows[check.key] = [start, check.amount]
                else:
                    window[1] += check.amount
        ticket = MemoryTicket(self, tuple(checks), starts, member)
        return Admission(-1, now, used, reserved, starts, ends, ticket)

    def _live_slots(self, check: Check, now: float) -> int:
        slots = self._slots.get(check.key)
        if not slots:
            return 0
        if len(slots) >= check.limit:
            for member in [m for m, expires in slots.items() if expires <= now]:
                del slots[member]
        return len(slots)

    def _spend_state(self, key: str, start: int) -> list[int]:
        state = self._spend.get(key)
        if state is None or state[0] != start:
            state = [start, self._preloaded.pop((key, start), 0), 0]
            self._spend[key] = state
        return state

    def release(
        self,
        checks: Sequence[Check],
        starts: list[int],
        member: int,
        mode: str,
        tokens: int,
        spend: int,
    ) -> None:
        """Finish one admission: see `aisix.limits.base` for what each mode keeps."""
        windows = self._windows
        for i, check in enumerate(checks):
            dim = check.dim
            if dim == CONCURRENCY:
                slots = self._slots.get(check.key)
                if slots is not None:
                    slots.pop(member, None)
            elif dim == SPEND:
                state = self._spend.get(check.key)
                if state is not None and state[0] == starts[i]:
                    state[2] -= check.amount
                    if mode == SETTLE:
                        state[1] += spend
            else:
                window = windows.get(check.key)
                if window is not None and window[0] == starts[i]:
                    if dim == TOKENS:
                        window[1] += (tokens if mode == SETTLE else 0) - check.amount
                    elif mode == ROLLBACK:
                        window[1] -= check.amount


class MemoryTicket:
    __slots__ = ("_backend", "_checks", "_member", "_starts")

    def __init__(
        self, backend: MemoryBackend, checks: tuple[Check, ...], starts: list[int], member: int
    ) -> None:
        self._backend = backend
        self._checks = checks
        self._starts = starts
        self._member = member

    async def finish(self, mode: str, tokens: int, spend: int) -> None:
        self._backend.release(self._checks, self._starts, self._member, mode, tokens, spend)

    def finish_now(self, mode: str, tokens: int, spend: int) -> None:
        """`finish` without a coroutine (it never awaits anything)."""
        self._backend.release(self._checks, self._starts, self._member, mode, tokens, spend)
