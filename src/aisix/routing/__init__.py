"""Routing of multi-target models: candidate order, health (cooldown, latency, in-flight),
retry rules. The attempt loop that uses them lives in `aisix.proxy`."""

from aisix.routing.health import HealthRegistry
from aisix.routing.retry import (
    backoff_base_ms,
    backoff_seconds,
    is_retryable,
    retries_for,
    routing_of,
    uses_default_retries,
)
from aisix.routing.strategies import Router, ip_allowed

__all__ = [
    "HealthRegistry",
    "Router",
    "backoff_base_ms",
    "backoff_seconds",
    "ip_allowed",
    "is_retryable",
    "retries_for",
    "routing_of",
    "uses_default_retries",
]
