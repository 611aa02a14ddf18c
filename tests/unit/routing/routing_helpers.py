"""Builders of real `ModelEntry` objects and a manual clock for the routing unit tests."""

from __future__ import annotations

import ipaddress
from typing import Any

from aisix.resources import DirectModel, RoutingModel, validate_value
from aisix.snapshot import ModelEntry


class FakeClock:
    """Monotonic and wall clocks that move only when a test says so."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_607_200.0) -> None:
        self.now = start
        self.wall_offset = wall_start - start

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds


def direct(model_id: str, **fields: Any) -> ModelEntry:
    raw = {
        "display_name": fields.pop("display_name", model_id),
        "provider": "openai",
        "model_name": "gpt-4o",
        "provider_key_id": "pk-1",
        **fields,
    }
    value = validate_value("models", raw)
    assert isinstance(value, DirectModel)
    networks = tuple(ipaddress.ip_network(c, strict=False) for c in value.allowed_cidrs or ())
    return ModelEntry(model_id, 1, value, networks=networks)


def routing_alias(
    alias_id: str, targets: list[ModelEntry | tuple[ModelEntry, int, int]], **routing: Any
) -> ModelEntry:
    routes = tuple(t if isinstance(t, tuple) else (t, 1, 0) for t in targets)
    raw = {
        "display_name": alias_id,
        "routing": {
            "targets": [{"model": t.alias, "weight": w, "priority": p} for t, w, p in routes],
            **routing,
        },
    }
    value = validate_value("models", raw)
    assert isinstance(value, RoutingModel)
    return ModelEntry(alias_id, 1, value, routes=routes)


def ids(entries: list[ModelEntry]) -> list[str]:
    return [e.id for e in entries]
