"""Builds the Governor the proxy uses from Settings: memory counters (spend kept durable by
the SQLite ledger) or Redis counters (spend durable in Redis), reporting to the metrics."""

from __future__ import annotations

from typing import Any

from aisix.limits.base import CounterBackend, SpendLedger
from aisix.limits.governor import Governor
from aisix.limits.memory import MemoryBackend
from aisix.limits.metrics import NO_METRICS, LimitMetrics, ObsMetrics
from aisix.settings import Settings


async def build_governor(
    settings: Settings, ledger: SpendLedger | None, metrics: Any = None
) -> Governor:
    """`ledger` (an `aisix.usage.UsageStore`) is used only with the memory backend."""
    conf = settings.ratelimit
    hooks: LimitMetrics = NO_METRICS if metrics is None else ObsMetrics(metrics)
    backend: CounterBackend
    if conf.backend == "redis":
        from aisix.limits.redis import RedisBackend, redis_client  # only Redis users pay for it

        assert conf.redis is not None
        backend = RedisBackend(
            redis_client(conf.redis),
            on_failure=conf.on_redis_failure,
            concurrency_ttl_secs=conf.concurrency_ttl_secs,
            metrics=hooks,
        )
        ledger = None
    else:
        backend = MemoryBackend(concurrency_ttl_secs=conf.concurrency_ttl_secs)
    return Governor(conf, backend, ledger, metrics=hooks)
