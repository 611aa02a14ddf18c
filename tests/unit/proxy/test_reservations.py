"""`Reservations`: every hold finished exactly once, by how the block exited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aisix.errors import InvalidRequest, UpstreamServerError
from aisix.proxy.reservations import Reservations
from aisix.wire.types import Usage


class FakeHold:
    """Records how it was finished (the governor's Hold has the same three finishers)."""

    def __init__(self) -> None:
        self.finished: list[Any] = []

    async def settle(self, usage: Usage, cost: float) -> None:
        self.finished.append(("settle", usage.total_tokens, cost))

    async def fail(self) -> None:
        self.finished.append("fail")

    async def rollback(self) -> None:
        self.finished.append("rollback")


async def run(exc: BaseException | None, partial: bool = False) -> list[FakeHold]:
    holds = [FakeHold(), FakeHold()]
    try:
        async with Reservations() as res:
            for hold in holds:
                res.take(hold)  # type: ignore[arg-type]
            if partial:
                res.partial = lambda: (Usage.of(3, 4), 0.5)
            if exc is not None:
                raise exc
    except BaseException:
        pass
    return holds


@pytest.mark.parametrize(
    ("exc", "partial", "expected"),
    [
        (InvalidRequest("bad"), False, "rollback"),
        (UpstreamServerError("boom"), False, "fail"),
        (RuntimeError("bug"), True, "fail"),
        (asyncio.CancelledError(), False, "fail"),
        (asyncio.CancelledError(), True, ("settle", 7, 0.5)),
        (None, False, "fail"),
    ],
)
def test_open_holds_finished_by_exit(
    exc: BaseException | None, partial: bool, expected: Any
) -> None:
    holds = asyncio.run(run(exc, partial))
    assert [h.finished for h in holds] == [[expected], [expected]]


def test_settled_and_failed_holds_are_not_finished_again() -> None:
    async def main() -> tuple[FakeHold, FakeHold]:
        first, second = FakeHold(), FakeHold()
        async with Reservations() as res:
            res.take(first)  # type: ignore[arg-type]
            await res.fail(first)  # type: ignore[arg-type]
            res.take(second)  # type: ignore[arg-type]
            await res.settle_all(Usage.of(1, 1), 0.0)
            assert res.open == 0
        return first, second

    first, second = asyncio.run(main())
    assert first.finished == ["fail"]
    assert second.finished == [("settle", 2, 0.0)]
