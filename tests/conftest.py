"""Shared test fixtures: free ports, the scriptable fake OpenAI upstream, a real etcd."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

# Make `tests/fakes` importable as `fakes` whatever pytest's rootdir/import mode is.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fakes.etcd_server import EtcdServer  # noqa: E402
from fakes.openai_upstream import FakeOpenAIUpstream  # noqa: E402
from fakes.postgres_server import PostgresServer  # noqa: E402
from fakes.redis_server import RedisServer  # noqa: E402

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
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server for one test (test modules may share one with a wider scope)."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh etcd key prefix, so tests sharing one etcd never see each other's keys."""
    return f"/aisix-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session; tests take a fresh database each (`pg_dsn`)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL."""
    return postgres_server.create_database()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for one test (tests that stop and restart it)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(autouse=True)
def close_sdk_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every sync OpenAI/Anthropic SDK client a test made, at its teardown.

    Tests build clients freely (`gw.openai_client()`, helpers); their connection pools would
    otherwise be closed by the garbage collector, whose ResourceWarning fails a later test
    (warnings are errors). This closes them properly; it patches only the SDKs' constructors.
    """
    made: list[openai.OpenAI | anthropic.Anthropic] = []
    for cls in (openai.OpenAI, anthropic.Anthropic):
        original = cls.__init__

        def record(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            _original(self, *args, **kwargs)
            made.append(self)

        monkeypatch.setattr(cls, "__init__", record)
    yield
    for client in made:
        client.close()
