"""The Redis counter backend end to end (contract §2.4, §9, §10.2, §12.1): two gateway
processes sharing one real redis-server enforce one rate limit and one budget exactly;
`proxy.workers: 2` needs Redis; Redis outages fail open (local counters, metric) or closed (503).
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import pytest
from e2e_helpers import ALIAS, PROVIDER_SECRET, UPSTREAM_MODEL, Gateway, sha256_hex, wait_for
from test_limits_budgets_e2e import (
    COST_21,
    PRICING,
    USAGE_21,
    assert_budget_refusal,
    assert_rate_refusal,
    chat,
    clear_of_window_edge,
    metric,
    parallel,
    statuses,
)

from fakes.openai_upstream import FakeOpenAIUpstream, Reply
from fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


def redis_config(server: RedisServer, **extra: Any) -> dict[str, Any]:
    return {"ratelimit": {"backend": "redis", "redis": {"url": server.url}, **extra}}


def seed_fixed(gw: Gateway, fake: FakeOpenAIUpstream, keys: dict[str, dict[str, Any]]) -> None:
    """The same resources under the same chosen ids on every gateway (PUT creates)."""
    resources = [
        (
            "/provider_keys/pk-1",
            {
                "display_name": "openai-test",
                "adapter": "openai",
                "provider": "openai",
                "secret": PROVIDER_SECRET,
                "api_base": fake.url + "/v1",
            },
        ),
        (
            "/models/model-1",
            {
                "display_name": ALIAS,
                "provider": "openai",
                "model_name": UPSTREAM_MODEL,
                "provider_key_id": "pk-1",
                "pricing": PRICING,
                "cooldown": {"enabled": False},
                "retries": 0,
            },
        ),
    ]
    for name, fields in keys.items():
        value = {"key_hash": sha256_hex(f"sk-{name}"), "allowed_models": ["*"], **fields}
        resources.append((f"/apikeys/{name}", value))
    for path, value in resources:
        response = gw.admin("PUT", path, value)
        assert response.status == 201, (path, response.text)
    for name in keys:
        gw.wait_for_key(f"sk-{name}")


def test_two_gateways_share_one_rate_limit_and_one_budget(
    gateway: Any, fake_openai: FakeOpenAIUpstream, redis_server: RedisServer
) -> None:
    keys: dict[str, dict[str, Any]] = {
        "shared-rpm": {"rate_limit": {"rpm": 5}},
        "shared-budget": {"budget": {"limit_usd": 0.05, "period": "day"}},
    }
    gws = [gateway(redis_config(redis_server)) for _ in range(2)]
    for gw in gws:
        seed_fixed(gw, fake_openai, keys)
    fake_openai.default = Reply(delay_s=0.3, usage=USAGE_21)
    clear_of_window_edge(86400, 15)
    clear_of_window_edge()

    # 12 parallel requests, 6 through each gateway: 5 admitted in all
    responses = parallel(
        [functools.partial(chat, gw, "shared-rpm") for gw in gws for _ in range(6)]
    )
    assert statuses(responses) == [200] * 5 + [429] * 7, [r.text for r in responses]
    for refused in (r for r in responses if r.status == 429):
        assert_rate_refusal(refused, "request limit exceeded (requests)")
    remaining = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status == 200
    )
    assert remaining == [0, 1, 2, 3, 4], remaining

    # 0.05 USD holds two 0.021 requests, whichever gateway serves them
    responses = parallel(
        [functools.partial(chat, gw, "shared-budget") for gw in gws for _ in range(4)]
    )
    assert statuses(responses) == [200] * 2 + [429] * 6, [r.text for r in responses]
    for refused in (r for r in responses if r.status == 429):
        assert_budget_refusal(refused, "api_key", "shared-budget", 0.05)

    def spent(gw: Gateway) -> float | None:
        response = gw.admin("GET", "/apikeys/shared-budget/usage")
        assert response.status == 200, response.text
        budget = response.json["budget"]
        return budget["spent_usd"] if budget["reserved_usd"] == 0 else None

    for gw in gws:  # both see the one shared spend
        found = wait_for(lambda gw=gw: spent(gw), 5.0, "settled shared spend")
        assert found == pytest.approx(2 * COST_21)
    assert len(fake_openai.model_requests()) == 7


def listening_sockets(port: int) -> int:
    """Sockets listening on `port` (one per process sharing it with SO_REUSEPORT)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A")


def test_two_workers_with_redis_share_the_limit(
    gateway: Any, fake_openai: FakeOpenAIUpstream, redis_server: RedisServer
) -> None:
    gw = gateway({**redis_config(redis_server), "proxy": {"workers": 2}})
    wait_for(lambda: listening_sockets(gw.proxy_port) == 2, 10.0, "the worker to listen")
    seed_fixed(gw, fake_openai, {"w": {"rate_limit": {"rpm": 6}}})
    # the extra worker follows the SQLite store within a second: wait until every new
    # connection (spread over both workers by SO_REUSEPORT) knows the key
    for _ in range(20):
        wait_for(lambda: gw.can_call("sk-w", ALIAS), 2.0, "both workers to know the key")
    fake_openai.default = Reply(usage=USAGE_21)
    clear_of_window_edge()
    results = [chat(gw, "w").status for _ in range(14)]
    assert sorted(results) == [200] * 6 + [429] * 8, results


def test_metrics_cover_every_worker(
    gateway: Any, fake_openai: FakeOpenAIUpstream, redis_server: RedisServer
) -> None:
    gw = gateway({**redis_config(redis_server), "proxy": {"workers": 2}})
    wait_for(lambda: listening_sockets(gw.proxy_port) == 2, 10.0, "the worker to listen")
    seed_fixed(gw, fake_openai, {"m": {}})
    for _ in range(20):
        wait_for(lambda: gw.can_call("sk-m", ALIAS), 2.0, "both workers to know the key")
    # each call is a new connection, which SO_REUSEPORT spreads over both processes: one
    # process's series alone would miss about half of them
    assert [chat(gw, "m").status for _ in range(30)] == [200] * 30
    chat_route = {"endpoint": "/v1/chat/completions"}

    def counted() -> bool:
        return gw.metric("aisix_requests_total", **chat_route) == 30

    wait_for(counted, 3.0, "every worker's requests in /metrics")
    assert gw.metric("aisix_request_duration_seconds_count", **chat_route) == 30
    assert gw.metric("aisix_llm_requests_total", status="200") == 30
    assert gw.metric("aisix_metrics_worker_scrape_failures_total") == 0


def test_workers_with_memory_backend_refused_at_startup(gateway: Any) -> None:
    gw = gateway({"proxy": {"workers": 2}}, start=False)
    result = subprocess.run(
        [*Gateway.command, "--config", str(gw.config_path)],
        capture_output=True,
        timeout=30,
        cwd=gw.dir,
    )
    stderr = result.stderr.decode()
    assert (
        "proxy.workers > 1 requires ratelimit.backend: redis (memory counters are per process)"
        in stderr
    )
    assert len(stderr.strip().splitlines()) == 1, stderr  # one line (§1.2)
    assert result.returncode == 2, stderr  # issue 2: an invalid config exits 2


def test_redis_outage_fails_open_or_closed(
    gateway: Any, fake_openai: FakeOpenAIUpstream, redis_server: RedisServer
) -> None:
    keys = {"k": {"rate_limit": {"rph": 3}}}
    open_gw = gateway(redis_config(redis_server))
    closed_gw = gateway(redis_config(redis_server, on_redis_failure="closed"))
    for gw in (open_gw, closed_gw):
        seed_fixed(gw, fake_openai, keys)
    fake_openai.default = Reply(usage=USAGE_21)
    assert chat(open_gw, "k").status == 200
    assert chat(closed_gw, "k").status == 200
    assert metric(open_gw, "aisix_redis_failures_total") == 0

    redis_server.stop()

    # fail open: served against this process's own counters (3 per hour, fresh), counted
    assert [chat(open_gw, "k").status for _ in range(4)] == [200, 200, 200, 429]
    assert metric(open_gw, "aisix_redis_failures_total") > 0
    # fail closed: refused with 503
    refused = chat(closed_gw, "k")
    assert refused.status == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert metric(closed_gw, "aisix_redis_failures_total") > 0
    assert len(fake_openai.model_requests()) == 5
