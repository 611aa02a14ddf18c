"""Durability of settled spend across kill -9 (issue 12 items 8 and 12), memory counter backend.

A burst of priced requests runs against the gateway; the gateway is killed with SIGKILL in
the middle of it and started again, three times. After each kill, the spend in the ledger
file must include every request that completed more than `usage.flush_interval_ms` (100 ms)
plus a scheduling margin before the kill: the loss is bounded by the documented window.
(With the old fixed 0.5 s flush, requests up to ~0.5 s old were lost.)
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from e2e_helpers import ALIAS, Gateway, GatewayFactory

from fakes.openai_upstream import FakeOpenAIUpstream, Reply

pytestmark = pytest.mark.timeout(120)

USAGE_21 = {"prompt_tokens": 1, "completion_tokens": 20, "total_tokens": 21}
PRICING = {"input_per_million": 1000, "output_per_million": 1000}
NANO_PER_REQUEST = 21_000_000  # 21 tokens at 0.001 USD
FLUSH_WINDOW_S = 0.1
#: scheduling slack on a shared 2-core machine (the write itself, a busy event loop)
MARGIN_S = 0.3
CLIENTS = 4
BURST_S = 1.2


def persisted_nano(gw: Gateway, key_id: str) -> int:
    with sqlite3.connect(Path(gw.config["data_dir"]) / "usage.db") as db:
        row = db.execute(
            "SELECT COALESCE(SUM(nano_usd), 0) FROM spend WHERE key LIKE ?",
            (f"%budget:key:{key_id}%",),
        ).fetchone()
    return int(row[0])


def burst_then_kill(gw: Gateway) -> tuple[list[float], float]:
    """Requests from CLIENTS threads; SIGKILL after BURST_S. Returns (completion times, kill
    time), both time.monotonic()."""
    done: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}

    def client() -> None:
        while not stop.is_set():
            try:
                response = gw.proxy("POST", "/v1/chat/completions", body, api_key="sk-burst")
            except OSError:
                return
            if response.status == 200:
                with lock:
                    done.append(time.monotonic())

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(BURST_S)
    assert gw.process is not None
    killed_at = time.monotonic()
    gw.process.send_signal(signal.SIGKILL)
    gw.process.wait(10)
    gw.process = None
    stop.set()
    for thread in threads:
        thread.join(20)
    with lock:
        return list(done), killed_at


def test_kill_9_loses_at_most_the_flush_window_of_settled_spend(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    fake_openai.default = Reply(usage=USAGE_21)
    gw = gateway({"usage": {"flush_interval_ms": int(FLUSH_WINDOW_S * 1000)}})
    pk = gw.create_provider_key(fake_openai.url)
    gw.create_model(ALIAS, pk, pricing=PRICING, retries=0, cooldown={"enabled": False})
    key_id = gw.create_api_key(
        "sk-burst", ["*"], budget={"limit_usd": 1_000_000, "period": "total"}
    )
    gw.wait_for_key("sk-burst")
    completed_before = 0
    for cycle in range(3):
        done, killed_at = burst_then_kill(gw)
        assert len(done) > 20, f"cycle {cycle}: the burst made only {len(done)} requests"
        old_enough = sum(1 for t in done if t <= killed_at - FLUSH_WINDOW_S - MARGIN_S)
        persisted = persisted_nano(gw, key_id)
        assert persisted % NANO_PER_REQUEST == 0
        persisted_requests = persisted // NANO_PER_REQUEST
        assert persisted_requests >= completed_before + old_enough, (
            f"cycle {cycle}: {persisted_requests} requests' spend persisted, but "
            f"{completed_before + old_enough} completed more than "
            f"{FLUSH_WINDOW_S + MARGIN_S}s before the kill"
        )
        # never more than was settled (completed, or settled just before the kill)
        assert persisted_requests <= completed_before + len(done) + CLIENTS
        completed_before = persisted_requests
        gw.start()
        gw.wait_for_key("sk-burst")
        state = gw.admin("GET", f"/apikeys/{key_id}/usage").json["budget"]
        assert round(state["spent_usd"] * 1e9) == persisted  # the restart reloads it
