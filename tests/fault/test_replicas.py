"""Two replicas on one real etcd and one real Redis (issue 12 item 12): a key with rpm N gets
exactly N calls across both replicas and the next is 429, and a key revoked through one
replica's admin API is refused by both within 1 s.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from typing import Any

import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, HttpResponse, wait_for

from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream
from fakes.redis_server import RedisServer

RPM = 6
REVOKE_WITHIN_S = 1.0
CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}


def replicas(
    gateway: Any, etcd: EtcdServer, redis: RedisServer, prefix: str
) -> tuple[Gateway, Gateway]:
    overrides = {
        "etcd": {"endpoints": [etcd.url], "prefix": prefix},
        "ratelimit": {"backend": "redis", "redis": {"url": redis.url}},
    }
    return gateway(overrides), gateway(overrides)


def seed(
    a: Gateway, b: Gateway, fake: FakeOpenAIUpstream, model: dict[str, Any], **key: Any
) -> str:
    """Provider key, model and caller key created on `a`, callable on both (b through etcd);
    the caller key's id."""
    pk = a.create_provider_key(fake.url)
    a.create_model(ALIAS, pk, **model)
    key_id = a.create_api_key(CALLER_KEY, [ALIAS], **key)
    for gw in (a, b):
        gw.wait_for_key(CALLER_KEY)
    return key_id


def clear_of_minute_edge(margin_s: float = 8.0) -> None:
    """rpm windows are fixed UTC minutes: start the burst well inside one."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


def call(gw: Gateway, key: str) -> HttpResponse:
    return gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=key)


def refuses(gw: Gateway, key: str) -> bool:
    return call(gw, key).status == 401


@pytest.mark.timeout(90)
def test_two_replicas_share_one_rate_limit_exactly(
    gateway: Any,
    own_etcd: EtcdServer,
    redis_server: RedisServer,
    prefix: str,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    a, b = replicas(gateway, own_etcd, redis_server, prefix)
    seed(a, b, fake_openai, {"cooldown": {"enabled": False}}, rate_limit={"rpm": RPM})
    clear_of_minute_edge()
    calls = [a if i % 2 else b for i in range(2 * RPM)]  # twice the limit, half on each
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda gw: call(gw, CALLER_KEY), calls))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * RPM + [429] * RPM, [r.text for r in answers]
    for refused in (r for r in answers if r.status == 429):
        assert refused.json["error"]["type"], refused.text
    # both replicas refuse the next call: the window's count is shared, not per process
    assert [call(gw, CALLER_KEY).status for gw in (a, b)] == [429, 429]


@pytest.mark.timeout(90)
def test_a_revoked_key_is_refused_on_both_replicas_within_one_second(
    gateway: Any,
    own_etcd: EtcdServer,
    redis_server: RedisServer,
    prefix: str,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    a, b = replicas(gateway, own_etcd, redis_server, prefix)
    key_id = seed(a, b, fake_openai, {})
    for gw in (a, b):
        assert call(gw, CALLER_KEY).status == 200
    revoked_at = time.monotonic()
    deleted = b.admin("DELETE", f"/apikeys/{key_id}")
    assert deleted.status in (200, 204), deleted.text
    for gw in (a, b):
        refusing = functools.partial(refuses, gw, CALLER_KEY)
        wait_for(refusing, REVOKE_WITHIN_S + 2.0, "the revoked key to be refused", every=0.02)
        took = time.monotonic() - revoked_at
        assert took < REVOKE_WITHIN_S, f"revocation took {took:.2f}s to reach {gw.proxy_url}"
        refused = call(gw, CALLER_KEY)
        assert refused.status == 401 and refused.json["error"]["message"], refused.text
