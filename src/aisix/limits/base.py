"""The counter-backend protocol every limit and budget goes through, and its value types.

A request's layers become a list of `Check`s that a backend admits or refuses *as a whole*
(all reserved, or nothing): request counts, token reservations, concurrency slots and budget
spend. The backend answers with an `Admission` holding what it saw (used / reserved amounts
and window bounds, for headers and error bodies) and a `Ticket` that later settles, fails or
rolls back exactly what was taken. Amounts are integers: requests, tokens, slots, and spend in
nano-USD (`NANO_PER_USD`), so shared counters stay exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

#: dimensions of a check
REQUESTS, TOKENS, CONCURRENCY, SPEND = "r", "t", "c", "s"
#: how a reservation finishes
SETTLE, FAIL, ROLLBACK = "s", "f", "r"
NANO_PER_USD = 1_000_000_000


@dataclass(slots=True)  # not frozen: built per request, and frozen __init__ is slow
class Check:
    """One bucket to check and reserve in: `key` is `aisix:rl:{<bucket>}:<dimension>`."""

    key: str
    dim: str
    #: window code (aisix.limits.windows); ignored for concurrency
    window: int
    limit: int
    amount: int
    #: False for `warn` budgets: counted, never refusing
    enforce: bool = True


@dataclass(slots=True)
class Admission:
    """What a backend saw while admitting (or refusing) a list of checks, index-aligned."""

    #: index of the first refusing check, -1 when admitted
    refused: int
    #: the clock the backend used (Redis: the server's), seconds
    now: float
    #: per check, before this request: count, tokens, slots in use, or spent nano-USD
    used: list[int]
    #: per check: reserved nano-USD of in-flight requests (spend only, else 0)
    reserved: list[int]
    starts: list[int]
    #: window ends, 0 for windows that never end (and for concurrency)
    ends: list[int]
    ticket: Ticket | None


class Ticket(Protocol):
    """The reservations of one admission; `finish` is called exactly once by the Hold."""

    async def finish(self, mode: str, tokens: int, spend: int) -> None: ...


class CounterBackend(Protocol):
    async def acquire(self, checks: Sequence[Check], dry: bool = False) -> Admission:
        """Check every bucket and reserve in all of them or none; `dry` only reads."""
        ...

    def preload_spend(self, spend: Mapping[tuple[str, int], int]) -> None:
        """Spent nano-USD by (spend key, period start) from a ledger; no-op where durable."""
        ...

    async def close(self) -> None: ...


class SpendLedger(Protocol):
    """Durable spend for backends that keep it in memory (aisix.usage implements it)."""

    def load_spend(self) -> dict[tuple[str, int], int]: ...

    def add_spend(self, key: str, period_start: int, nano_usd: int) -> None:
        """Record settled spend; must not block (batched off the hot path)."""
        ...
