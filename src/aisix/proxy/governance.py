"""What the pipeline needs from rate limits and budgets, as protocols.

The proxy depends only on these shapes; `aisix.limits` provides the implementation. A
`Hold` is what one admission took (request counts, token and cost reservations, a
concurrency slot); exactly one of `settle`, `fail` or `rollback` finishes it.
"""

from __future__ import annotations

from typing import Protocol

from aisix.asgi import Headers
from aisix.events import Usage
from aisix.pricing import Estimate
from aisix.snapshot import KeyEntry, ModelEntry, Snapshot


class Hold(Protocol):
    headers: Headers
    budget_warnings: list[str]

    async def settle(self, usage: Usage, cost_usd: float) -> None: ...

    async def fail(self) -> None: ...

    async def rollback(self) -> None: ...


class Governor(Protocol):
    async def admit_gate(
        self,
        snap: Snapshot,
        key: KeyEntry,
        alias: ModelEntry,
        est: Estimate,
        candidates: list[ModelEntry],
    ) -> Hold: ...

    async def admit_attempt(
        self,
        snap: Snapshot,
        key: KeyEntry,
        target: ModelEntry,
        est: Estimate,
        gate_alias: ModelEntry,
    ) -> Hold: ...

    async def close(self) -> None: ...
