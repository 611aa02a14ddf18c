"""Fault-injection tests: the e2e gateway fixtures (a real `aisix` subprocess, fake upstreams
on real sockets) plus raw-socket clients that misbehave: slow, oversized, non-reading."""

from __future__ import annotations

from e2e.conftest import gateway, seeded  # noqa: F401  (fixtures re-exported for tests/fault)
