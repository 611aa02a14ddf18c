"""Retry rules (§8.3, §8.4): backoff bounds, retry budgets, what is retryable."""

from __future__ import annotations

import random

import pytest
from routing_helpers import direct, routing_alias

from aisix.errors import (
    GatewayError,
    RateLimited,
    UpstreamConnectionError,
    UpstreamDecodeError,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.resources import Routing
from aisix.routing.retry import (
    backoff_base_ms,
    backoff_seconds,
    is_retryable,
    retries_for,
    routing_of,
    uses_default_retries,
)


@pytest.mark.parametrize(
    ("k", "base_ms", "low_ms"),
    [
        (1, 100, 100),
        (2, 100, 200),
        (3, 100, 400),
        (5, 100, 1600),
        (6, 100, 2000),
        (64, 100, 2000),
        (1, 250, 250),
        (4, 250, 2000),
    ],
)
def test_backoff_bounds(k: int, base_ms: int, low_ms: int) -> None:
    rng = random.Random(7)
    waits = [backoff_seconds(k, base_ms, None, rng) for _ in range(2000)]
    assert min(waits) >= low_ms / 1000
    assert max(waits) < (low_ms + base_ms) / 1000
    # the jitter really spreads over [0, base): both halves are used
    assert min(waits) < (low_ms + base_ms * 0.1) / 1000
    assert max(waits) > (low_ms + base_ms * 0.9) / 1000


def test_backoff_retry_after_up_to_5s_replaces_computed_part() -> None:
    rng = random.Random(7)
    for _ in range(200):
        wait = backoff_seconds(1, 100, 3.0, rng)
        assert 3.0 <= wait < 3.1
        assert 5.0 <= backoff_seconds(4, 100, 5.0, rng) < 5.1
        assert 0.0 <= backoff_seconds(6, 100, 0.0, rng) < 0.1
        assert 0.8 <= backoff_seconds(4, 100, 5.5, rng) < 0.9  # too long: ignored


def test_backoff_zero_base_has_no_wait_or_jitter() -> None:
    rng = random.Random(7)
    assert backoff_seconds(3, 0, None, rng) == 0.0
    assert backoff_seconds(3, 0, 2.0, rng) == 2.0


def test_backoff_base_and_routing_of() -> None:
    target = direct("t")
    alias = routing_alias("r", [target], retry_backoff_ms=250)
    assert backoff_base_ms(alias) == 250
    assert backoff_base_ms(routing_alias("r2", [target])) == 100
    assert backoff_base_ms(target) == 100
    assert routing_of(target) is None
    routing = routing_of(alias)
    assert isinstance(routing, Routing) and routing.retry_backoff_ms == 250


def test_retries_for() -> None:
    plain = direct("plain")
    tuned = direct("tuned", retries=5)
    assert retries_for(plain, plain, 2) == 2
    assert retries_for(tuned, tuned, 2) == 5
    assert retries_for(routing_alias("r", [tuned]), tuned, 2) == 0  # routing.retries default
    assert retries_for(routing_alias("r", [tuned], retries=3), plain, 2) == 3
    assert uses_default_retries(plain)
    assert not uses_default_retries(tuned)
    assert not uses_default_retries(routing_alias("r", [plain]))


def status(code: int) -> GatewayError:
    return upstream_status_error(code, b"{}", None)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (status(500), True),
        (status(503), True),
        (UpstreamTimeout("timed out"), True),
        (UpstreamConnectionError("refused"), True),
        (UpstreamDecodeError("garbage"), True),
        (status(400), False),
        (status(401), False),
        (status(403), False),
        (status(404), False),
        (status(408), False),
        (status(429), False),
        (RateLimited("local limit"), False),
    ],
)
def test_is_retryable_classification(error: GatewayError, retryable: bool) -> None:
    assert is_retryable(error, None) is retryable
    assert is_retryable(error, routing_of(routing_alias("r", [direct("t")]))) is retryable


def test_429_retryable_only_with_retry_on_429() -> None:
    on = routing_of(routing_alias("r", [direct("t")], retry_on_429=True))
    assert is_retryable(status(429), on)
    assert not is_retryable(status(400), on)
    assert not is_retryable(RateLimited("local limit"), on)


def test_default_retries_do_not_retry_timeouts() -> None:
    plain = direct("plain")
    defaulted = uses_default_retries(plain)
    assert not is_retryable(UpstreamTimeout("timed out"), None, default_retries=defaulted)
    assert is_retryable(status(502), None, default_retries=defaulted)
    assert is_retryable(UpstreamConnectionError("refused"), None, default_retries=defaulted)
