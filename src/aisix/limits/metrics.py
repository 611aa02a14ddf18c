"""The counts the limits package reports (contract §12.1), behind a small hook protocol.

The governor and the Redis backend call a `LimitMetrics`; `ObsMetrics` forwards to the
observability module's families (`aisix_ratelimit_rejections_total{scope,layer}`,
`aisix_budget_rejections_total{scope}`, `aisix_budget_warnings_total{scope}`,
`aisix_redis_failures_total{operation}`), `NO_METRICS` drops them (unit tests).
"""

from __future__ import annotations

from typing import Any, Protocol


class LimitMetrics(Protocol):
    def redis_failure(self, operation: str) -> None: ...

    def ratelimit_rejected(self, scope: str, layer: str) -> None: ...

    def budget_rejected(self, scope: str) -> None: ...

    def budget_warned(self, scope: str) -> None: ...


class _NoMetrics:
    def redis_failure(self, operation: str) -> None:
        return None

    def ratelimit_rejected(self, scope: str, layer: str) -> None:
        return None

    def budget_rejected(self, scope: str) -> None:
        return None

    def budget_warned(self, scope: str) -> None:
        return None


NO_METRICS: LimitMetrics = _NoMetrics()


class ObsMetrics:
    """Adapter for `aisix.obs.metrics.Metrics` (families with a memoised `.child(*labels)`)."""

    def __init__(self, metrics: Any) -> None:
        self._m = metrics

    def redis_failure(self, operation: str) -> None:
        self._m.redis_failures.child(operation).inc()

    def ratelimit_rejected(self, scope: str, layer: str) -> None:
        self._m.ratelimit_rejections.child(scope, layer).inc()

    def budget_rejected(self, scope: str) -> None:
        self._m.budget_rejections.child(scope).inc()

    def budget_warned(self, scope: str) -> None:
        self._m.budget_warnings.child(scope).inc()
