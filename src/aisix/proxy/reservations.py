"""Every counter hold a request takes, finished exactly once on every path.

`Reservations` is an async context manager around the pipeline's work: holds join it when
they are admitted and leave it when they are settled, failed or rolled back. Whatever is
still open when the block exits is finished by how it exited: an error that never reached an
upstream rolls back, any other error fails (concurrency released, reservations given back),
and a client disconnect after a streamed head settles from what the stream delivered
(`partial`). A render error, a bug or a cancellation can no longer leak a slot or a budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from aisix.errors import GatewayError
from aisix.limits.governor import Hold
from aisix.wire.types import Usage

#: what a cancelled stream delivered: (usage, cost) to settle with, or None to fail
Partial = Callable[[], tuple[Usage, float] | None]


class Reservations:
    __slots__ = ("_open", "partial")

    def __init__(self) -> None:
        self._open: list[Hold] = []
        self.partial: Partial | None = None

    def take(self, hold: Hold) -> Hold:
        self._open.append(hold)
        return hold

    def _drop(self, hold: Hold) -> None:
        if hold in self._open:
            self._open.remove(hold)

    async def fail(self, hold: Hold) -> None:
        self._drop(hold)
        await hold.fail()

    async def settle_all(self, usage: Usage, cost_usd: float) -> None:
        holds, self._open = self._open, []
        for hold in holds:
            await hold.settle(usage, cost_usd)

    @property
    def open(self) -> int:
        return len(self._open)

    async def __aenter__(self) -> Reservations:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._open:
            return
        holds, self._open = self._open, []
        if isinstance(exc, GatewayError) and not exc.reached_upstream:
            for hold in holds:
                await hold.rollback()
            return
        seen = self.partial() if self.partial is not None and exc is not None else None
        if isinstance(exc, asyncio.CancelledError) and seen is not None:
            for hold in holds:
                await hold.settle(*seen)
            return
        for hold in holds:
            await hold.fail()
