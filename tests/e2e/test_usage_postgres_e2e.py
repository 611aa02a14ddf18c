"""Cluster-wide usage on PostgreSQL end to end (issue 13 items 2, 3, 5): two gateway replicas
on one etcd write usage to one real PostgreSQL and either reads the cluster's totals; the
schema is migrated once; an outage of PostgreSQL mid-run never fails a request, the events
go to the spill file and are replayed when it is back, nothing lost; budget spend survives a
restart; the audit log is shared. The same read endpoints on the default SQLite ledger."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from e2e_helpers import ADMIN_KEY, ALIAS, Gateway, GatewayFactory, sha256_hex, wait_for

from fakes.etcd_server import EtcdServer
from fakes.openai_upstream import FakeOpenAIUpstream, Reply
from fakes.postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(120)

USAGE_21 = {"prompt_tokens": 1, "completion_tokens": 20, "total_tokens": 21}
PRICING = {"input_per_million": 1000, "output_per_million": 1000}  # 0.001 USD per token
COST_21 = 0.021
CALLER = "sk-cluster-caller"


def chat(gw: Gateway, n: int, key: str = CALLER) -> None:
    client = gw.openai_client(api_key=key)
    for _ in range(n):
        answer = client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=20
        )
        assert answer.usage is not None and answer.usage.total_tokens == 21


def get(gw: Gateway, path: str) -> dict[str, Any]:
    response = gw.admin("GET", path)
    assert response.status == 200, (path, response.status, response.text)
    body: dict[str, Any] = response.json
    return body


def requests_seen(gw: Gateway, key_id: str) -> int:
    return int(get(gw, f"/apikeys/{key_id}/usage")["requests"])


def cluster(
    gateway: GatewayFactory, etcd: EtcdServer, prefix: str, dsn: str, **usage: Any
) -> tuple[Gateway, Gateway]:
    overrides = {
        "etcd": {"endpoints": [etcd.url], "prefix": prefix},
        "usage": {"backend": "postgres", "dsn": dsn, "flush_interval_ms": 100, **usage},
    }
    return gateway(overrides), gateway(overrides)


def seed(a: Gateway, b: Gateway, upstream: str, **key_fields: Any) -> tuple[str, str, str]:
    pk = a.create_provider_key(upstream)
    model = a.create_model(ALIAS, pk, pricing=PRICING, cooldown={"enabled": False}, retries=0)
    key = a.create_api_key(CALLER, [ALIAS], display_name="cluster-key", **key_fields)
    b.wait_for_key(CALLER, timeout=3.0)
    a.wait_for_key(CALLER, timeout=3.0)
    return pk, model, key


def test_two_replicas_share_usage_and_audit_on_postgres(
    gateway: GatewayFactory,
    own_etcd: EtcdServer,
    prefix: str,
    postgres_server: PostgresServer,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    dsn = postgres_server.create_database()
    a, b = cluster(gateway, own_etcd, prefix, dsn)
    fake_openai.default = Reply(usage=USAGE_21)
    pk, model, key = seed(a, b, fake_openai.url)
    chat(a, 3)
    chat(b, 2)

    for reader in (a, b):  # each replica reads the cluster's traffic, not only its own
        wait_for(lambda r=reader: requests_seen(r, key) == 5, 5.0, "cluster-wide usage")
    usage = get(b, "/usage?group_by=api_key")
    assert [(r["key"], r["display_name"], r["requests"]) for r in usage["rows"]] == [
        (key, "cluster-key", 5)
    ]
    assert usage["rows"][0]["cost_usd"] == pytest.approx(5 * COST_21)
    by_pk = get(a, "/usage?group_by=provider_key")["rows"]
    assert [(r["key"], r["display_name"]) for r in by_pk] == [(pk, "openai-test")]
    series = get(a, "/usage/timeseries?bucket=minute")
    assert len(series["points"]) in (60, 61)  # the last hour, the current minute included
    assert sum(p["requests"] for p in series["points"]) == 5
    busy = [p for p in series["points"] if p["requests"]]
    assert all(p["latency_p50_ms"] is not None and p["errors"] == 0 for p in busy)
    top = get(b, "/usage/top?by=model&metric=total_tokens")
    assert [(r["key"], r["display_name"], r["total_tokens"]) for r in top["rows"]] == [
        (model, ALIAS, 105)
    ]

    audit = get(b, "/audit?kind=api_keys")  # written through A, read through B
    assert [(e["action"], e["resource_id"]) for e in audit["entries"]] == [("create", key)]
    assert get(a, "/audit")["total"] == 3
    versions = postgres_server.psql("SELECT version FROM schema_version", dsn.rsplit("/", 1)[1])
    assert versions == "1"  # two replicas started, the migration ran once


def test_postgres_outage_spills_then_replays_and_spend_survives_restart(
    gateway: GatewayFactory,
    own_etcd: EtcdServer,
    prefix: str,
    own_postgres: PostgresServer,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    dsn = own_postgres.create_database()
    a, b = cluster(gateway, own_etcd, prefix, dsn, timeout_ms=1000)
    fake_openai.default = Reply(usage=USAGE_21)
    _, _, key = seed(a, b, fake_openai.url, budget={"limit_usd": 10, "period": "month"})
    chat(a, 2)
    wait_for(lambda: requests_seen(b, key) == 2, 5.0, "usage before the outage")

    own_postgres.stop()
    chat(a, 3)  # requests keep working while the usage database is down
    chat(b, 4)

    def spilled(gw: Gateway) -> float:
        return gw.metric("aisix_usage_spilled_total")

    wait_for(lambda: spilled(a) == 3 and spilled(b) == 4, 10.0, "events spilled")
    down = a.admin("GET", f"/apikeys/{key}/usage")
    assert down.status == 503 and "usage database unavailable" in down.json["error_msg"]
    assert a.metric("aisix_usage_event_drops_total") == 0

    own_postgres.start()
    for gw in (a, b):
        wait_for(lambda g=gw: g.metric("aisix_usage_replayed_total") == spilled(g), 15.0, "replay")
    wait_for(lambda: requests_seen(a, key) == 9, 5.0, "every request counted once")
    spent = get(b, f"/apikeys/{key}/usage")["cost_usd"]
    assert spent == pytest.approx(9 * COST_21)

    # memory counters: spend is read back from PostgreSQL at startup, where both replicas
    # added theirs, so the restarted replica starts from the cluster's spend
    a.restart()
    budget = get(a, f"/apikeys/{key}/usage")["budget"]
    assert budget["spent_usd"] == pytest.approx(9 * COST_21)
    assert budget["remaining_usd"] == pytest.approx(10 - 9 * COST_21)


def test_read_endpoints_on_sqlite(gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream) -> None:
    gw = gateway({"usage": {"flush_interval_ms": 100}})
    fake_openai.default = Reply(usage=USAGE_21)
    pk = gw.create_provider_key(fake_openai.url)
    gw.create_model(ALIAS, pk, pricing=PRICING, cooldown={"enabled": False}, retries=0)
    key = gw.create_api_key(CALLER, [ALIAS])
    gw.wait_for_key(CALLER)
    chat(gw, 2)
    bad = gw.openai_client(api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError):  # not admitted: not counted
        bad.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "x"}])
    wait_for(lambda: requests_seen(gw, key) == 2, 5.0, "usage")

    day = get(gw, "/usage/timeseries?bucket=day")
    assert len(day["points"]) in (30, 31) and day["points"][-1]["requests"] == 2
    hour = get(gw, f"/usage/timeseries?api_key_id={key}")
    assert hour["bucket"] == "hour" and len(hour["points"]) in (24, 25)
    assert hour["points"][-1]["total_tokens"] == 42
    assert get(gw, "/usage/timeseries?api_key_id=nobody")["points"][-1]["requests"] == 0
    top = get(gw, "/usage/top")
    assert top["by"] == "api_key" and top["metric"] == "cost_usd"
    assert [(r["key"], r["requests"], r["errors"]) for r in top["rows"]] == [(key, 2, 0)]
    audit = get(gw, "/audit?limit=2")
    assert audit["total"] == 3 and len(audit["entries"]) == 2
    assert audit["entries"][0]["actor"] == sha256_hex(ADMIN_KEY)[:16]
    for path in (
        "/usage/timeseries?bucket=minute&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        "/usage/timeseries?bucket=fortnight",
        "/usage/timeseries?from=tomorrow",
        "/usage/top?by=user",
        "/usage/top?limit=0",
        "/usage?group_by=region",
        "/audit?limit=5000",
    ):
        response = gw.admin("GET", path)
        assert response.status == 400 and response.json["error_msg"], path
    document = gw.admin("GET", "/admin/openapi.json", key=None).json
    for path in ("/admin/v1/usage/timeseries", "/admin/v1/usage/top", "/admin/v1/audit"):
        assert "get" in document["paths"][path], path
    schema = document["paths"]["/admin/v1/audit"]["get"]["responses"]["200"]
    assert schema["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AuditPage"
    }


def test_a_wrong_database_is_a_startup_error_without_the_password(
    gateway: GatewayFactory, postgres_server: PostgresServer
) -> None:
    dsn = f"postgresql://aisix:hunter2-secret@127.0.0.1:{postgres_server.port}/no_such_db"
    gw = gateway({"usage": {"backend": "postgres", "dsn": dsn}}, start=False)
    with pytest.raises(AssertionError, match="exited with 1") as caught:
        gw.start()
    assert "usage.dsn: cannot open the usage ledger" in str(caught.value)
    assert "no_such_db" in str(caught.value) and "hunter2" not in str(caught.value)


def test_an_unreachable_database_at_startup_does_not_stop_the_gateway(
    gateway: GatewayFactory,
    own_postgres: PostgresServer,
    fake_openai: FakeOpenAIUpstream,
) -> None:
    dsn = own_postgres.create_database()
    own_postgres.stop()
    gw = gateway(
        {"usage": {"backend": "postgres", "dsn": dsn, "flush_interval_ms": 100, "timeout_ms": 500}}
    )
    fake_openai.default = Reply(usage=USAGE_21)
    pk = gw.create_provider_key(fake_openai.url)
    gw.create_model(ALIAS, pk, cooldown={"enabled": False}, retries=0)
    key = gw.create_api_key(CALLER, [ALIAS])
    gw.wait_for_key(CALLER)
    chat(gw, 2)
    wait_for(lambda: gw.metric("aisix_usage_spilled_total") >= 2, 10.0, "events spilled")
    own_postgres.start()  # migrations run on the first connection, then the spill replays
    wait_for(lambda: gw.admin("GET", f"/apikeys/{key}/usage").status == 200, 15.0, "reads")
    wait_for(lambda: requests_seen(gw, key) == 2, 15.0, "the spilled requests")
    entries = wait_for(lambda: get(gw, "/audit")["total"] == 3, 15.0, "spilled audit entries")
    assert entries
