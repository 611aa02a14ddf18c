"""Two gateways on one real etcd (contract §2.3, §3.3, §3.4, §4.3, §11): admin writes through
gateway A reach gateway B within 1 s, direct etcd writes are served or rejected like admin
writes, and an etcd outage keeps both serving their last snapshot until the watch resyncs."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, GatewayFactory, Seed, wait_for

from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream

PROPAGATION_S = 1.0
CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pair(gateway: GatewayFactory, own_etcd: EtcdServer, prefix: str) -> tuple[Gateway, Gateway]:
    overrides = {"etcd": {"endpoints": [own_etcd.url], "prefix": prefix}}
    return gateway(overrides), gateway(overrides)


def within(predicate: Callable[[], Any], what: str, bound: float = PROPAGATION_S) -> float:
    """Poll until `predicate` holds; assert it took less than `bound` seconds; return that."""
    started = time.monotonic()
    wait_for(predicate, bound + 2.0, what, every=0.01)
    elapsed = time.monotonic() - started
    assert elapsed < bound, f"{what} took {elapsed:.2f}s (bound {bound}s)"
    return elapsed


def models_status(gw: Gateway, api_key: str) -> int:
    return gw.proxy("GET", "/v1/models", api_key=api_key).status


def config(gw: Gateway) -> dict[str, Any]:
    response = gw.status("/status/config")
    assert response.status == 200, response.text
    body: dict[str, Any] = response.json
    return body


def seed_on(a: Gateway, b: Gateway, upstream: str) -> Seed:
    pk_id = a.create_provider_key(upstream)
    model_id = a.create_model(ALIAS, pk_id)
    key_id = a.create_api_key(CALLER_KEY, [ALIAS])
    within(lambda: b.can_call(CALLER_KEY, ALIAS), "the new caller key to work on B")
    # A applies its own writes through its watch too: wait for it as well
    wait_for(lambda: a.can_call(CALLER_KEY, ALIAS), 5.0, "the new caller key to work on A")
    return Seed(provider_key_id=pk_id, model_id=model_id, api_key_id=key_id)


def test_source_and_key_created_on_a_works_on_b(
    pair: tuple[Gateway, Gateway],
    fake_openai: FakeOpenAIUpstream,
    own_etcd: EtcdServer,
    prefix: str,
) -> None:
    a, b = pair
    seed = seed_on(a, b, fake_openai.url)
    response = b.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
    assert response.status == 200, response.text
    # reads come from the store: B's admin API shows A's write with the same revision
    got = b.admin("GET", f"/apikeys/{seed.api_key_id}")
    assert got.status == 200 and got.json["revision"] == 1
    listed = b.admin("GET", "/models")
    assert [m["id"] for m in listed.json["list"]] == [seed.model_id]
    # the key layout is <prefix>/<segment>/<id> with the bare value
    raw = own_etcd.get(f"{prefix}/api_keys/{seed.api_key_id}")
    assert raw is not None and orjson.loads(raw["value"]) == got.json["value"]
    status = config(b)
    source = {k: status["source"].get(k) for k in ("type", "location", "connected")}
    assert source == {"type": "etcd", "location": own_etcd.url + prefix, "connected": True}
    assert status["state"] == "synced"
    assert status["snapshot"]["resource_counts"]["api_keys"] == 1
    assert status["rejected"] == []


def test_rotation_disable_and_delete_on_a_stop_the_key_on_b(
    pair: tuple[Gateway, Gateway], fake_openai: FakeOpenAIUpstream
) -> None:
    a, b = pair
    seed = seed_on(a, b, fake_openai.url)

    rotated = a.admin("POST", f"/apikeys/{seed.api_key_id}/rotate")
    assert rotated.status == 200, rotated.text
    new_key = rotated.json["plaintext"]
    assert rotated.json["entry"]["revision"] == 2
    within(lambda: models_status(b, CALLER_KEY) == 401, "the rotated-out key to fail on B")
    assert b.can_call(new_key, ALIAS)

    value = {**rotated.json["entry"]["value"], "disabled": True}
    disabled = a.admin("PUT", f"/apikeys/{seed.api_key_id}", value)
    assert disabled.status == 200 and disabled.json["revision"] == 3
    within(lambda: models_status(b, new_key) == 401, "the disabled key to fail on B")

    other = a.create_api_key("sk-second-caller", [ALIAS])
    within(lambda: b.can_call("sk-second-caller", ALIAS), "the second key to work on B")
    deleted = a.admin("DELETE", f"/apikeys/{other}")
    assert deleted.status == 200, deleted.text
    within(lambda: models_status(b, "sk-second-caller") == 401, "the deleted key to fail on B")
    assert b.admin("GET", f"/apikeys/{other}").status == 404


def test_direct_etcd_writes_are_served_or_rejected(
    pair: tuple[Gateway, Gateway],
    fake_openai: FakeOpenAIUpstream,
    own_etcd: EtcdServer,
    prefix: str,
) -> None:
    a, b = pair
    seed = seed_on(a, b, fake_openai.url)
    a.create_api_key("sk-any-model", ["*"])
    key = f"{prefix}/models/direct-1"
    valid = {
        "display_name": "direct-model",
        "provider": "openai",
        "model_name": "gpt-4o-mini",
        "provider_key_id": seed.provider_key_id,
    }
    own_etcd.put(key, orjson.dumps(valid))
    for gw in (a, b):
        within(functools.partial(gw.can_call, "sk-any-model", "direct-model"), "the direct model")
    chat = {**CHAT, "model": "direct-model"}
    assert b.proxy("POST", "/v1/chat/completions", chat, api_key="sk-any-model").status == 200
    assert a.admin("GET", "/models/direct-1").json["revision"] == 1

    # an invalid overwrite is rejected; the previous version keeps serving
    broken = {**valid, "provider_key_id": "no-such-provider-key"}
    own_etcd.put(key, orjson.dumps(broken))

    def rejected(gw: Gateway) -> list[dict[str, Any]]:
        return list(config(gw)["rejected"])

    for gw in (a, b):
        wait_for(lambda gw=gw: rejected(gw), 2.0, "the rejection")
        (entry,) = rejected(gw)
        assert entry["kind"] == "models" and entry["id"] == "direct-1"
        assert entry["name"] == "direct-model"
        assert "no-such-provider-key" in entry["error"]
        assert "serving_stale_since" in entry
        assert gw.can_call("sk-any-model", "direct-model")
        response = gw.proxy("POST", "/v1/chat/completions", chat, api_key="sk-any-model")
        assert response.status == 200, response.text

    # a key that was never valid (not even JSON) is listed and not served
    own_etcd.put(f"{prefix}/models/garbage", b"{not json")
    wait_for(lambda: len(rejected(b)) == 2, 2.0, "the second rejection")
    garbage = next(r for r in rejected(b) if r["id"] == "garbage")
    assert "serving_stale_since" not in garbage
    # fixing the value clears the rejection
    own_etcd.put(key, orjson.dumps({**valid, "model_name": "gpt-4o"}))
    own_etcd.delete(f"{prefix}/models/garbage")
    wait_for(lambda: rejected(b) == [], 2.0, "the rejections to clear")
    assert b.admin("GET", "/models/direct-1").json["revision"] == 3


def test_etcd_outage_keeps_serving_and_the_watch_resyncs(
    pair: tuple[Gateway, Gateway], fake_openai: FakeOpenAIUpstream, own_etcd: EtcdServer
) -> None:
    a, b = pair
    seed_on(a, b, fake_openai.url)
    revision = config(b)["snapshot"]["revision"]
    own_etcd.stop()

    for gw in (a, b):
        wait_for(lambda gw=gw: not config(gw)["source"]["connected"], 5.0, "disconnected")
        response = gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY)
        assert response.status == 200, response.text
        assert config(gw)["snapshot"]["revision"] == revision
    write = a.admin("POST", "/apikeys", {"key_hash": "0" * 64, "allowed_models": [ALIAS]})
    assert write.status == 503, write.text
    assert write.json["error_msg"].startswith("store unavailable: "), write.text
    assert b.admin("GET", "/apikeys").status == 503

    own_etcd.start()  # same ports, same data
    a.create_api_key("sk-after-outage", [ALIAS])
    # B's watch reconnects after its backoff (1 s doubling), reloads and follows again
    wait_for(lambda: b.can_call("sk-after-outage", ALIAS), 20.0, "B to resync after the outage")
    for gw in (a, b):
        wait_for(lambda gw=gw: config(gw)["source"]["connected"], 5.0, "connected")
    # and propagation is back to the normal bound
    a.create_api_key("sk-after-resync", [ALIAS])
    within(lambda: b.can_call("sk-after-resync", ALIAS), "propagation after the resync")
