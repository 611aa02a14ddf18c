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
        used: list[int] = []
        reserved: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        spans: dict[int, tuple[int, int]] = {}
        refused = -1
        for i, check in enumerate(checks):
            held = 0
            if check.dim == CONCURRENCY:
                start = end = 0
                current = self._live_slots(check, now)
            else:
                span = spans.get(check.window)
                if span is None:
                    span = spans[check.window] = bounds(check.window, now)
                start, end = span
                if check.dim == SPEND:
                    _, current, held = self._spend_state(check.key, start)
                else:
                    window = self._windows.get(check.key)
                    current = window[1] if window is not None and window[0] == start else 0
            used.append(current)
            reserved.append(held)
            starts.append(start)
            ends.append(end)
            if refused < 0 and check.enforce and current + held + check.amount > check.limit:
                refused = i
        if refused >= 0 or dry:
            return Admission(refused, now, used, reserved, starts, ends, None)
        member = next(self._members)
        for check, start in zip(checks, starts, strict=True):
            if check.dim == CONCURRENCY:
                self._slots.setdefault(check.key, {})[member] = now + self._ttl
            elif check.dim == SPEND:
                self._spend[check.key][2] += check.amount
            else:
                window = self._windows.get(check.key)
                if window is None or window[0] != start:
                    self._windows[check.key] = [start, check.amount]
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
        for check, start in zip(checks, starts, strict=True):
            if check.dim == CONCURRENCY:
                slots = self._slots.get(check.key)
                if slots is not None:
                    slots.pop(member, None)
            elif check.dim == SPEND:
                state = self._spend.get(check.key)
                if state is not None and state[0] == start:
                    state[2] -= check.amount
                    if mode == SETTLE:
                        state[1] += spend
            else:
                window = self._windows.get(check.key)
                if window is None or window[0] != start:
                    continue
                if check.dim == TOKENS:
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
