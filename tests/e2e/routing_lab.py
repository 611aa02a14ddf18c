"""Helpers for the routing e2e tests (contract §8): one gateway per module, fake upstreams per
test, single-target models each behind its own provider key, and routing aliases over them.

Every test works under its own name prefix, so tests sharing the module's gateway never see
each other's models, cooldowns, round-robin counters or metric series.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from e2e_helpers import Gateway, HttpResponse, wait_for

from fakes.openai_upstream import FakeOpenAIUpstream

CALLER = "sk-routing-caller"
CHAT_PATH = "/v1/chat/completions"
_prefixes = itertools.count(1)


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free a moment ago, not handed out before by this module."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def start_gateway(
    tmp_path_factory: pytest.TempPathFactory, port_factory: Callable[[], int]
) -> Gateway:
    gw = Gateway(tmp_path_factory.mktemp("routing"), port_factory, None).start()
    gw.create_api_key(CALLER, ["*"])
    return gw


def error_of(response: HttpResponse, status: int) -> dict[str, Any]:
    """Assert an OpenAI error envelope with `status`; return its `error` object."""
    assert response.status == status, (response.status, response.text)
    body = response.json
    assert isinstance(body, dict) and set(body) == {"error"}, response.text
    return dict(body["error"])


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def count(fake: FakeOpenAIUpstream) -> int:
    return len(fake.model_requests())


class Lab:
    """One test's view of the shared gateway: its own fakes, models and aliases."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.prefix = f"r{next(_prefixes)}-"
        self.fakes: list[FakeOpenAIUpstream] = []
        self._ids = itertools.count(1)

    # -- resources -----------------------------------------------------------------------------

    def upstream(self, **fake_args: Any) -> FakeOpenAIUpstream:
        fake = FakeOpenAIUpstream(**fake_args).start()
        self.fakes.append(fake)
        return fake

    def target(self, short: str, upstream: FakeOpenAIUpstream | str, **fields: Any) -> str:
        """A single-target model `<prefix><short>` behind its own provider key; `upstream` is a
        fake or a root URL. Returns the alias."""
        url = upstream if isinstance(upstream, str) else upstream.url
        name = self.prefix + short
        pk = self.gw.create_provider_key(url, display_name=name + "-pk")
        self.gw.create_model(name, pk, **fields)
        return name

    def alias(self, short: str, targets: list[Any], **routing: Any) -> str:
        """A routing alias over `targets` (aliases, or dicts with `model`, `weight`, ...)."""
        name = self.prefix + short
        specs = [t if isinstance(t, dict) else {"model": t} for t in targets]
        self.gw.create("models", {"display_name": name, "routing": {"targets": specs, **routing}})
        self.ready(name)
        return name

    def ready(self, *names: str) -> None:
        """Wait until the proxy's snapshot holds every model in `names`."""
        wait_for(lambda: set(names) <= set(self.statuses()), 5.0, f"{names} to propagate")

    # -- calls ---------------------------------------------------------------------------------

    def request_id(self) -> str:
        return f"{self.prefix}req-{next(self._ids)}"

    def call(
        self, model: str, *, stream: bool = False, path: str = CHAT_PATH, **extra: Any
    ) -> HttpResponse:
        headers = {"x-request-id": extra.pop("request_id", None) or self.request_id()}
        if path == "/v1/embeddings":
            body: dict[str, Any] = {"model": model, "input": "hi"}
        elif path == "/v1/completions":
            body = {"model": model, "prompt": "hi"}
        else:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            body["stream"] = True
        body.update(extra)
        return self.gw.proxy("POST", path, body, headers=headers, api_key=CALLER)

    def many(self, model: str, n: int, workers: int = 8) -> list[HttpResponse]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda _: self.call(model), range(n)))

    # -- observation ---------------------------------------------------------------------------

    def statuses(self, path: str = "/admin/v1/models/status") -> dict[str, dict[str, Any]]:
        admin = path.startswith("/admin")
        response = self.gw.admin("GET", path) if admin else self.gw.status(path)
        assert response.status == 200, response.text
        return {
            m["display_name"]: m for m in response.json if m["display_name"].startswith(self.prefix)
        }

    def status(self, name: str) -> dict[str, Any]:
        return self.statuses()[name]

    def wait_status(self, name: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (s := self.status(name))["status"] == status and s,
                timeout,
                f"{name} to be {status}",
            )
        )

    def log_line(self, request_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            lines = [r for r in self.gw.access_log_lines() if r["request_id"] == request_id]
            return lines[-1] if lines else None

        return dict(wait_for(find, 5.0, f"access log line for {request_id}"))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return self.gw.metric(name, **labels)

    def close(self) -> None:
        for fake in self.fakes:
            fake.stop()


def lab_fixture(gw: Gateway) -> Iterator[Lab]:
    lab = Lab(gw)
    try:
        yield lab
    finally:
        lab.close()
        assert gw.running, f"gateway died; stderr:\n{gw.stderr_text()}"


def served_by(response: HttpResponse) -> str | None:
    return response.headers.get("x-aisix-served-by")


def since(start: float) -> float:
    return time.monotonic() - start
