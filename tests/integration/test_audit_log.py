"""The audit log (issue 13 item 3) in-process: the admin API over a real SQLite store, the
audit rows in a real ledger database (SQLite file or PostgreSQL server): one entry per
committed create, update, delete and rotate, with the admin key's fingerprint and a diff
whose secrets are masked; nothing for refused writes; `GET /admin/v1/audit` filters, pages
and validates its query."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aisix.admin import build_admin_app
from aisix.admin.audit import AuditLog
from aisix.store.sqlite import SqliteStore
from aisix.usage import BatchingLedger, SqliteLedger
from aisix.usage.postgres import PostgresLedger
from aisix.usage.spill import SpillFile
from fakes.asgi_client import AsgiClient

pytestmark = pytest.mark.anyio

ADMIN_KEY = "admin-key-one"
OTHER_KEY = "admin-key-two"
SECRET = "sk-provider-secret-123"
NEW_SECRET = "sk-provider-secret-456"


def fp(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
async def clients(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AsgiClient, AsgiClient]]:
    store = SqliteStore(tmp_path / "aisix.db")
    await store.open()
    ledger: BatchingLedger
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        ledger = PostgresLedger(dsn, SpillFile(tmp_path / "spill", 1 << 20))
    else:
        ledger = SqliteLedger(tmp_path / "usage.db")
    await ledger.start()
    app = build_admin_app(store, [ADMIN_KEY, OTHER_KEY], audit=AuditLog(ledger))
    try:
        yield AsgiClient(app, ADMIN_KEY), AsgiClient(app, OTHER_KEY)
    finally:
        await ledger.close()
        await store.close()


async def audit(client: AsgiClient, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/admin/v1/audit{query}")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


async def test_every_write_is_recorded_with_masked_secrets(
    clients: tuple[AsgiClient, AsgiClient],
) -> None:
    one, two = clients
    pk = await one.post(
        "/admin/v1/provider_keys",
        json={"display_name": "openai", "secret": SECRET, "api_base": "http://a/v1"},
    )
    assert pk.status == 201
    pk_id = pk.json()["id"]
    changed = {"display_name": "openai", "secret": NEW_SECRET, "api_base": "http://b/v1"}
    assert (await two.put(f"/admin/v1/provider_keys/{pk_id}", json=changed)).status == 200
    refused = await one.post("/admin/v1/models", json={"display_name": "m", "provider": "x"})
    assert refused.status == 400  # refused writes leave no entry
    model = await one.post(
        "/admin/v1/models",
        json={
            "display_name": "m",
            "provider": "openai",
            "model_name": "gpt-4o",
            "provider_key_id": pk_id,
        },
    )
    assert model.status == 201
    key_hash = hashlib.sha256(b"caller").hexdigest()
    key = await one.post("/admin/v1/apikeys", json={"key_hash": key_hash, "allowed_models": ["m"]})
    key_id = key.json()["id"]
    rotated = await two.post(f"/admin/v1/apikeys/{key_id}/rotate", json={"grace_seconds": 60})
    assert rotated.status == 200
    plaintext = rotated.json()["plaintext"]
    assert (await one.request("DELETE", f"/admin/v1/apikeys/{key_id}")).status == 200

    log = await audit(one)
    text = orjson.dumps(log).decode()
    assert SECRET not in text and NEW_SECRET not in text and plaintext not in text
    assert log["total"] == 6 and log["limit"] == 50 and log["offset"] == 0
    entries = log["entries"]
    assert [(e["action"], e["kind"]) for e in entries] == [  # newest first
        ("delete", "api_keys"),
        ("rotate", "api_keys"),
        ("create", "api_keys"),
        ("create", "models"),
        ("update", "provider_keys"),
        ("create", "provider_keys"),
    ]
    assert [e["actor"] for e in entries] == [
        fp(ADMIN_KEY),
        fp(OTHER_KEY),
        fp(ADMIN_KEY),
        fp(ADMIN_KEY),
        fp(OTHER_KEY),
        fp(ADMIN_KEY),
    ]
    created_pk, updated_pk = entries[5], entries[4]
    assert created_pk["resource_id"] == pk_id and created_pk["at"].endswith("Z")
    assert created_pk["diff"]["secret"] == {"before": None, "after": "***"}
    assert created_pk["diff"]["api_base"] == {"before": None, "after": "http://a/v1"}
    assert updated_pk["diff"] == {
        "api_base": {"before": "http://a/v1", "after": "http://b/v1"},
        "secret": {"before": "***", "after": "***"},  # it changed; what it is stays hidden
    }
    rotate = entries[1]["diff"]
    assert rotate["key_hash"]["before"] == key_hash
    assert rotate["key_hash"]["after"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert rotate["previous_key_hash"] == {"before": None, "after": key_hash}
    assert set(rotate) == {"key_hash", "previous_key_hash", "previous_key_expires_at"}
    deleted = entries[0]["diff"]
    assert deleted["key_hash"]["after"] is None and deleted["allowed_models"] == {
        "before": ["m"],
        "after": None,
    }


async def test_filters_paging_and_bad_queries(clients: tuple[AsgiClient, AsgiClient]) -> None:
    one, two = clients
    ids = []
    for i in range(5):
        client = one if i % 2 == 0 else two
        response = await client.post(
            "/admin/v1/rate_limit_policies",
            json={
                "name": f"p{i}",
                "scope": "team",
                "scope_ref": "t",
                "window": "minute",
                "max_requests": 10,
            },
        )
        assert response.status == 201, response.body
        ids.append(response.json()["id"])
    renamed = {
        "name": "p0-renamed",
        "scope": "team",
        "scope_ref": "t",
        "window": "minute",
        "max_requests": 20,
    }
    assert (await two.put(f"/admin/v1/rate_limit_policies/{ids[0]}", json=renamed)).status == 200

    everything = await audit(one)
    assert everything["total"] == 6
    first_page = await audit(one, "?limit=2")
    second_page = await audit(one, "?limit=2&offset=2")
    assert [e["id"] for e in first_page["entries"] + second_page["entries"]] == [
        e["id"] for e in everything["entries"][:4]
    ]
    assert first_page["total"] == 6 and second_page["offset"] == 2
    by_other = await audit(one, f"?actor={fp(OTHER_KEY)}")
    assert by_other["total"] == 3
    one_resource = await audit(one, f"?resource_id={ids[0]}&kind=rate_limit_policies")
    assert [e["action"] for e in one_resource["entries"]] == ["update", "create"]
    assert one_resource["entries"][0]["diff"] == {
        "name": {"before": "p0", "after": "p0-renamed"},
        "max_requests": {"before": 10, "after": 20},
    }
    updates = await audit(one, "?action=update")
    assert updates["total"] == 1
    newest = everything["entries"][0]["at"]
    assert (await audit(one, f"?from={newest}"))["total"] >= 1
    assert (await audit(one, "?to=2000-01-01T00:00:00Z"))["total"] == 0
    assert (await audit(one, "?kind=apikeys"))["total"] == 0  # the path alias is accepted
    for query, message in [
        ("?limit=0", "limit must be an integer between 1 and 1000"),
        ("?limit=1001", "limit must be an integer between 1 and 1000"),
        ("?offset=-1", "offset must be an integer >= 0"),
        ("?action=patch", "action must be one of create, update, delete, rotate"),
        ("?kind=guardrails", "kind must be one of"),
        ("?from=yesterday", "from and to must be RFC 3339 timestamps"),
    ]:
        response = await one.get(f"/admin/v1/audit{query}")
        assert response.status == 400, query
        assert response.error.startswith(message), (query, response.error)
    assert (await one.get("/admin/v1/audit", auth=False)).status == 401
