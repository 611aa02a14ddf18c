"""Shared test fixtures: free ports, the scriptable fake OpenAI upstream, a real etcd."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Make `tests/fakes` importable as `fakes` whatever pytest's rootdir/import mode is.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fakes.etcd_server import EtcdServer  # noqa: E402
from fakes.openai_upstream import FakeOpenAIUpstream  # noqa: E402

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago and that this session has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


@pytest.fixture
def port_factory() -> Callable[[], int]:
    return free_port


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIUpstream]:
    """A fake OpenAI upstream, started for one test and stopped after it."""
    fake = FakeOpenAIUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real single-member etcd for one test (tests that stop and restart it)."""
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh etcd key prefix, so tests sharing one etcd never see each other's keys."""
    return f"/aisix-test-{uuid.uuid4().hex[:12]}"
