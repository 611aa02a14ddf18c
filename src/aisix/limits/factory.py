"""Builds the Governor the proxy uses from Settings (memory or Redis counters)."""

from __future__ import annotations

from typing import Any

from aisix.asgi import Headers
from aisix.events import Usage
from aisix.pricing import Estimate
from aisix.settings import Settings
from aisix.snapshot import KeyEntry, ModelEntry, Snapshot


class _Noop:
    headers: Headers = []
    budget_warnings: list[str] = []

    async def settle(self, usage: Usage, cost_usd: float) -> None:
        return None

    async def fail(self) -> None:
        return None

    async def rollback(self) -> None:
        return None


_NOOP = _Noop()


class Unlimited:
    """TEMPORARY: admits everything until the limits governor is wired in."""

    async def admit_gate(
        self, snap: Snapshot, key: KeyEntry, alias: ModelEntry, est: Estimate, candidates: list[ModelEntry]
    ) -> _Noop:
        return _NOOP

    async def admit_attempt(
        self, snap: Snapshot, key: KeyEntry, target: ModelEntry, est: Estimate, gate_alias: ModelEntry
    ) -> _Noop:
        return _NOOP

    async def close(self) -> None:
        return None


async def build_governor(settings: Settings, ledger: Any, metrics: Any) -> Unlimited:
    return Unlimited()
