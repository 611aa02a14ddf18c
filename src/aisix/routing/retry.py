"""Retry decisions of the attempt loop (contract §8.3, §8.4): how often, what, how long.

Pure functions over the alias, the target and the failed attempt's `GatewayError`; the
attempt loop in `aisix.proxy` owns the loop itself, the sleeps and the cooldown calls.
"""

from __future__ import annotations

import random

from aisix.errors import GatewayError, UpstreamRateLimited
from aisix.resources import Routing
from aisix.snapshot import ModelEntry

#: ceiling of the computed (exponential) part of the backoff
MAX_BACKOFF_MS = 2000
#: an upstream Retry-After up to this many seconds replaces the computed backoff
MAX_HONOURED_RETRY_AFTER_S = 5.0
DEFAULT_RETRY_BACKOFF_MS = 100


def backoff_seconds(
    attempt_k: int, base_ms: int, retry_after: float | None, rng: random.Random
) -> float:
    """Wait before retry `attempt_k` (1-based): min(base·2^(k−1), 2000) ms, or an upstream
    Retry-After of at most 5 s instead, plus uniform jitter in [0, base) ms."""
    if retry_after is not None and 0 <= retry_after <= MAX_HONOURED_RETRY_AFTER_S:
        computed_ms = retry_after * 1000.0
    else:
        exponent = max(attempt_k - 1, 0)
        computed_ms = float(
            MAX_BACKOFF_MS if exponent >= 31 else min(base_ms << exponent, MAX_BACKOFF_MS)
        )
    jitter_ms = rng.random() * base_ms if base_ms > 0 else 0.0
    return (computed_ms + jitter_ms) / 1000.0


def backoff_base_ms(alias: ModelEntry) -> int:
    """`routing.retry_backoff_ms` for a routing alias, 100 otherwise."""
    if alias.routing is not None:
        return alias.routing.routing.retry_backoff_ms
    return DEFAULT_RETRY_BACKOFF_MS


def routing_of(alias: ModelEntry) -> Routing | None:
    return alias.routing.routing if alias.routing is not None else None


def retries_for(alias: ModelEntry, target: ModelEntry, default_retries: int) -> int:
    """Extra attempts on `target`: routing.retries for a routing alias; for a single-target
    alias the model's `retries`, else `upstream.retries` (`default_retries`)."""
    if alias.routing is not None:
        return alias.routing.routing.retries
    if target.direct is not None and target.direct.retries is not None:
        return target.direct.retries
    return default_retries


def uses_default_retries(alias: ModelEntry) -> bool:
    """A single-target alias without its own `retries`: it runs on `upstream.retries`, under
    which timeouts are not retried (§8.4)."""
    return alias.direct is not None and alias.direct.retries is None


def is_retryable(
    error: GatewayError, routing: Routing | None, *, default_retries: bool = False
) -> bool:
    """Whether a failed attempt may be retried / failed over (§8.3).

    Retryable: upstream 5xx, timeout, connection error, malformed response (`error.retryable`)
    and upstream 429 when `routing.retry_on_429`. `default_retries=True` (see
    `uses_default_retries`) makes timeouts not retryable.
    """
    if error.retryable:
        return not (default_retries and error.reason == "request_timeout")
    if routing is not None and routing.retry_on_429:
        return error.upstream_status == 429 or isinstance(error, UpstreamRateLimited)
    return False
