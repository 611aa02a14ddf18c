"""Prometheus counters owned by the limits package (contract §12.1).

Module-level so they register once in the default registry; the observability module exposes
the registry and must not define these names again.
"""

from __future__ import annotations

from prometheus_client import Counter

REDIS_FAILURES = Counter(
    "aisix_redis_failures", "Counter-backend operations that failed to reach Redis", ["operation"]
)
RATELIMIT_REJECTIONS = Counter(
    "aisix_ratelimit_rejections", "Requests refused by a rate limit", ["scope", "layer"]
)
BUDGET_REJECTIONS = Counter(
    "aisix_budget_rejections", "Requests refused by a block budget", ["scope"]
)
BUDGET_WARNINGS = Counter(
    "aisix_budget_warnings", "Requests that pushed a warn budget past its limit", ["scope"]
)
