"""Fixtures of the fault-injection suite: the e2e `gateway` factory, the misbehaving upstream.

The suite drives real `aisix` processes like tests/e2e does, so it reuses tests/e2e/conftest.py
(registered as `e2e_helpers`; loaded here by path when only tests/fault is collected). Every
test is marked `fault` and bounded in time: upstream deadlines are configured in seconds.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.fault_upstream import FaultUpstream

if "e2e_helpers" not in sys.modules:
    _path = Path(__file__).resolve().parent.parent / "e2e" / "conftest.py"
    _spec = importlib.util.spec_from_file_location("e2e_helpers", _path)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["e2e_helpers"] = _module
    _spec.loader.exec_module(_module)

from e2e_helpers import gateway, seeded

__all__ = ["fault_upstream", "gateway", "seeded"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture
def fault_upstream() -> Iterator[FaultUpstream]:
    upstream = FaultUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()
