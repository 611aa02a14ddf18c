"""The admin API (contract §4) in-process over a real SQLite store in tmp_path."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aisix.admin import AdminError, AdminRequest, AdminResponse, build_admin_app, resource_schemas
from aisix.egress import DEFAULT_DENIED_CIDRS, EgressPolicy
from aisix.resources import parse_rfc3339
from aisix.store.sqlite import SqliteStore, StoreOpenError
from fakes.asgi_client import AsgiClient

pytestmark = pytest.mark.anyio

ADMIN_KEY = "admin-key-one"
OTHER_KEY = "admin-key-two"
SECRET = "sk-provider-secret-123"
HASH_A = hashlib.sha256(b"caller-a").hexdigest()
HASH_B = hashlib.sha256(b"caller-b").hexdigest()
UNAUTHORIZED = "missing or malformed admin authorization"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness:
    def __init__(self, store: SqliteStore, writes: list[int]) -> None:
        self.store = store
        self.writes = writes
        self.draining = False

        async def status(request: AdminRequest) -> AdminResponse:
            return AdminResponse(200, [{"display_name": "x", "status": "healthy"}])

        async def usage(request: AdminRequest) -> AdminResponse:
            if request.path_params["id"] == "boom":
                raise AdminError(400, "from is after to")
            return AdminResponse(200, {"api_key_id": request.path_params["id"], **request.query})

        app = build_admin_app(
            store,
            [ADMIN_KEY, OTHER_KEY],
            on_write=lambda: writes.append(1),
            extra_routes={
                ("GET", "/admin/v1/models/status"): status,
                ("GET", "/admin/v1/apikeys/{id}/usage"): usage,
            },
            draining=lambda: self.draining,
        )
        self.client = AsgiClient(app, ADMIN_KEY)

    async def provider_key(self, name: str = "openai-prod", **extra: Any) -> dict[str, Any]:
        body = {"display_name": name, "secret": SECRET, **extra}
        response = await self.client.post("/admin/v1/provider_keys", json=body)
        assert response.status == 201, response.body
        return response.json()

    async def model(self, name: str, provider_key_id: str) -> dict[str, Any]:
        body = {
            "display_name": name,
            "provider": "openai",
            "model_name": "gpt-4o",
            "provider_key_id": provider_key_id,
        }
        response = await self.client.post("/admin/v1/models", json=body)
        assert response.status == 201, response.body
        return response.json()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = SqliteStore(tmp_path / "aisix.db")
    await store.open()
    try:
        yield Harness(store, [])
    finally:
        await store.close()


# -- authentication -------------------------------------------------------------------------


async def test_auth_required_and_every_form_checked(harness: Harness) -> None:
    client = harness.client
    url = "/admin/v1/models"
    assert (await client.get(url, auth=False)).error == UNAUTHORIZED
    assert (await client.get(url, auth=False)).status == 401
    for headers in (
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {ADMIN_KEY}"},
        {"authorization": "Bearer "},
        {"authorization": ADMIN_KEY},
        {"x-api-key": "wrong"},
        # x-api-key is read only when Authorization is absent
        {"authorization": "Bearer wrong", "x-api-key": ADMIN_KEY},
    ):
        response = await client.get(url, auth=False, headers=headers)
        assert (response.status, response.error) == (401, UNAUTHORIZED), headers
    for headers in (
        {"authorization": f"Bearer {ADMIN_KEY}"},
        {"authorization": f"bearer  {OTHER_KEY} "},
        {"x-api-key": ADMIN_KEY},
    ):
        assert (await client.get(url, auth=False, headers=headers)).status == 200, headers


async def test_auth_checked_before_body_is_read(harness: Harness) -> None:
    big = b"x" * (20 * 1024 * 1024)
    response = await harness.client.post("/admin/v1/models", body=big, auth=False)
    assert (response.status, response.error) == (401, UNAUTHORIZED)
    response = await harness.client.get("/admin/v1/nope", auth=False)
    assert response.status == 401


async def test_error_messages_never_contain_keys_or_secrets(harness: Harness) -> None:
    await harness.provider_key()
    body = {"display_name": "openai-prod", "secret": SECRET}
    clash = await harness.client.post("/admin/v1/provider_keys", json=body)
    assert clash.status == 409
    bad = await harness.client.post("/admin/v1/provider_keys", json={**body, "adapter": "bogus"})
    assert bad.status == 400
    wrong = await harness.client.get("/admin/v1/models", auth=False, headers={"x-api-key": "k"})
    for response in (clash, bad, wrong):
        assert SECRET not in response.body.decode() and ADMIN_KEY not in response.body.decode()


# -- public endpoints -----------------------------------------------------------------------


async def test_livez_and_draining(harness: Harness) -> None:
    response = await harness.client.get("/livez", auth=False)
    assert (response.status, response.body) == (200, b"ok")
    assert response.headers["content-type"].startswith("text/plain")
    harness.draining = True
    response = await harness.client.get("/livez", auth=False)
    assert (response.status, response.body) == (503, b"draining")


async def test_resource_schemas_are_draft_2020_12() -> None:
    schemas = resource_schemas()
    assert set(schemas) == {
        "provider_keys",
        "models",
        "api_keys",
        "rate_limit_policies",
        "budget_policies",
    }
    for schema in schemas.values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "key_hash" in schemas["api_keys"]["required"]
    assert len(schemas["models"]["anyOf"]) == 2


async def test_openapi_document_covers_every_route(harness: Harness) -> None:
    response = await harness.client.get("/admin/openapi.json", auth=False)
    assert response.status == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    for segment in ("provider_keys", "models", "apikeys", "rate_limit_policies"):
        assert {"get", "post"} <= set(paths[f"/admin/v1/{segment}"])
        assert {"get", "put", "delete"} <= set(paths[f"/admin/v1/{segment}/{{id}}"])
    assert "post" in paths["/admin/v1/apikeys/{id}/rotate"]
    assert "get" in paths["/admin/v1/models/status"]
    assert "get" in paths["/admin/v1/apikeys/{id}/usage"]
    schemas = document["components"]["schemas"]
    assert "wieght" not in str(schemas) and "weight" in schemas["RoutingTarget"]["properties"]
    assert schemas["ProviderKey"]["additionalProperties"] is False


async def test_docs_page_and_assets_served_offline(harness: Harness) -> None:
    page = await harness.client.get("/admin/docs", auth=False)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/admin/docs/swagger-ui-bundle.js" in page.body
    script = await harness.client.get("/admin/docs/swagger-ui-bundle.js", auth=False)
    assert script.status == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert len(script.body) > 100_000
    css = await harness.client.get("/admin/docs/swagger-ui.css", auth=False)
    assert css.headers["content-type"].startswith("text/css")
    spec = await harness.client.get("/admin/docs/openapi.json", auth=False)
    assert spec.json()["openapi"].startswith("3.0")
    for missing in ("/admin/docs/../../etc/passwd", "/admin/docs/nope.js", "/admin/docs/index.j2"):
        assert (await harness.client.get(missing, auth=False)).status == 404


# -- routes ---------------------------------------------------------------------------------


async def test_unknown_routes_reserved_kinds_and_methods(harness: Harness) -> None:
    client = harness.client
    for kind in ("guardrails", "cache_policies", "observability_exporters"):
        for method in ("GET", "POST"):
            response = await client.request(method, f"/admin/v1/{kind}", json={"name": "x"})
            assert (response.status, response.error) == (404, "resource not found")
    assert (await client.get("/admin/v1/nope")).status == 404
    assert (await client.get("/elsewhere", auth=False)).status == 404
    patch = await client.request("PATCH", "/admin/v1/models", json={})
    assert (patch.status, patch.error) == (405, "method not allowed")
    assert (await client.get("/admin/v1/apikeys/x/rotate")).status == 405
    assert (await client.post("/admin/v1/models/status")).status == 405
    assert (await client.post("/admin/openapi.json", auth=False)).status == 405


async def test_extra_routes(harness: Harness) -> None:
    client = harness.client
    response = await client.get("/admin/v1/models/status")
    assert response.json() == [{"display_name": "x", "status": "healthy"}]
    assert (await client.get("/admin/v1/models/status", auth=False)).status == 401
    usage = await client.get("/admin/v1/apikeys/k1/usage?from=2026-01-01T00:00:00Z")
    assert usage.json() == {"api_key_id": "k1", "from": "2026-01-01T00:00:00Z"}
    boom = await client.get("/admin/v1/apikeys/boom/usage")
    assert (boom.status, boom.error) == (400, "from is after to")
    # `/admin/v1/models/status` is its own resource (GET only), not `/models/{id}`
    put = await client.put("/admin/v1/models/status", json={})
    assert (put.status, put.headers["allow"]) == (405, "GET")
    # elsewhere `status` is never a valid id: a 400, not a route clash
    assert (await client.put("/admin/v1/api_keys/status", json={})).status == 400


# -- CRUD -----------------------------------------------------------------------------------


async def test_post_get_list_delete(harness: Harness) -> None:
    client = harness.client
    created = await harness.provider_key()
    assert uuid.UUID(created["id"]).version == 4
    assert created["revision"] == 1
    assert created["value"] == {
        "display_name": "openai-prod",
        "secret": "***",
        "provider": "",
        "adapter": "openai",
        "strip_headers": ["authorization", "cookie", "set-cookie", "x-api-key"],
    }
    fetched = await client.get(f"/admin/v1/provider_keys/{created['id']}")
    assert fetched.json() == created
    listed = await client.get("/admin/v1/provider_keys")
    assert listed.json() == {"list": [created], "total": 1}
    deleted = await client.delete(f"/admin/v1/provider_keys/{created['id']}")
    assert deleted.json() == {"deleted": True, "id": created["id"]}
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/admin/v1/provider_keys/{created['id']}")
        assert (response.status, response.error) == (404, "resource not found")
    assert harness.writes == [1, 1]


async def test_list_paging_and_bad_queries(harness: Harness) -> None:
    ids = [(await harness.provider_key(f"pk-{i}"))["id"] for i in range(5)]
    client = harness.client
    page = (await client.get("/admin/v1/provider_keys?limit=2&offset=1")).json()
    assert [e["id"] for e in page["list"]] == ids[1:3] and page["total"] == 5
    assert (await client.get("/admin/v1/provider_keys?offset=4")).json()["total"] == 5
    assert len((await client.get("/admin/v1/provider_keys?offset=9")).json()["list"]) == 0
    assert len((await client.get("/admin/v1/provider_keys?limit=1000")).json()["list"]) == 5
    for query in (
        "limit=",
        "limit=0",
        "limit=1001",
        "limit=x",
        "limit=-1",
        "offset=-1",
        "offset=a",
    ):
        response = await client.get(f"/admin/v1/provider_keys?{query}")
        assert response.status == 400, query
        assert query.split("=")[0] in response.error


async def test_list_search_filters_on_the_server(harness: Harness) -> None:
    for name in ("billing-east", "billing-west", "search-team", "other"):
        await harness.provider_key(name, provider="openai", telemetry_tags={"owner": name})
    client = harness.client
    found = (await client.get("/admin/v1/provider_keys?search=BILLING")).json()
    assert sorted(e["value"]["display_name"] for e in found["list"]) == [
        "billing-east",
        "billing-west",
    ]
    assert found["total"] == 2
    both = (await client.get("/admin/v1/provider_keys?search=billing%20west")).json()
    assert [e["value"]["display_name"] for e in both["list"]] == ["billing-west"]
    paged = (await client.get("/admin/v1/provider_keys?search=billing&limit=1&offset=1")).json()
    assert paged["total"] == 2 and len(paged["list"]) == 1
    # nested values (metadata, tags) are searched; the secret never is
    assert (await client.get("/admin/v1/provider_keys?search=owner")).json()["total"] == 0
    tagged = (await client.get("/admin/v1/provider_keys?search=search-team")).json()
    assert tagged["total"] == 1
    assert (await client.get(f"/admin/v1/provider_keys?search={SECRET[:12]}")).json()["total"] == 0
    too_long = await client.get("/admin/v1/provider_keys?search=" + "x" * 300)
    assert too_long.status == 400 and "search" in too_long.error


async def test_put_creates_updates_and_validates_ids(harness: Harness) -> None:
    client = harness.client
    body = {"key_hash": HASH_A, "allowed_models": ["gpt-4o-prod"]}
    created = await client.put("/admin/v1/apikeys/my-key.v1", json=body)
    assert created.status == 201 and created.json()["revision"] == 1
    updated = await client.put("/admin/v1/api_keys/my-key.v1", json={**body, "disabled": True})
    assert updated.status == 200
    assert updated.json() == {"id": "my-key.v1", "revision": 2, "value": {**body, "disabled": True}}
    for bad in ("-leading", "status", "a" * 65, "sp ace", "ü"):
        response = await client.put(f"/admin/v1/apikeys/{bad}", json=body)
        assert response.status == 400 and "invalid id" in response.error, bad
    assert (await client.put("/admin/v1/apikeys/" + "a" * 64, json=body)).status == 409


async def test_put_replaces_value_whole(harness: Harness) -> None:
    body = {"key_hash": HASH_A, "allowed_models": [], "team_id": "t1"}
    await harness.client.put("/admin/v1/apikeys/k", json=body)
    replaced = await harness.client.put(
        "/admin/v1/apikeys/k", json={"key_hash": HASH_A, "allowed_models": []}
    )
    assert "team_id" not in replaced.json()["value"]


async def test_json_syntax_and_encoding(harness: Harness) -> None:
    client = harness.client
    response = await client.post("/admin/v1/provider_keys", body=b"{not json")
    assert response.status == 400 and response.error.startswith("invalid JSON")
    response = await client.post("/admin/v1/provider_keys", body=b'{"display_name": "\xff\xfe"}')
    assert (response.status, response.error) == (400, "request body is not valid UTF-8")
    response = await client.post("/admin/v1/provider_keys", body=b"")
    assert response.status == 400
    response = await client.post("/admin/v1/provider_keys", json=[1])
    assert (response.status, response.error) == (400, "request body must be a JSON object")
    text = b'{"display_name": "pk", "secret": "s"}'
    response = await client.post(
        "/admin/v1/provider_keys", body=text, headers={"content-type": "text/plain"}
    )
    assert response.status == 201


async def test_field_errors_name_the_json_path(harness: Harness) -> None:
    client = harness.client
    routing = {"display_name": "r", "routing": {"targets": [{"model": "m", "wieght": 1}]}}
    response = await client.post("/admin/v1/models", json=routing)
    assert (response.status, response.error) == (400, 'unknown field "routing.targets[0].wieght"')
    response = await client.post("/admin/v1/apikeys", json={"allowed_models": []})
    assert (response.status, response.error) == (400, 'missing field "key_hash"')
    body = {"key_hash": HASH_A, "allowed_models": [], "max_budget_usd": 3}
    response = await client.post("/admin/v1/apikeys", json=body)
    assert response.error == 'unknown field "max_budget_usd"'


async def test_fields_are_checked_before_references(harness: Harness) -> None:
    body = {"display_name": "m", "provider": "openai", "model_name": "x", "provider_key_id": "nope"}
    response = await harness.client.post("/admin/v1/models", json=body)
    assert (response.status, response.error) == (400, 'provider_key_id "nope" does not exist')
    response = await harness.client.post("/admin/v1/models", json={**body, "timeout": "1"})
    assert response.status == 400 and response.error.startswith("timeout:")
    assert harness.writes == []


async def test_references_uniqueness_and_referenced_delete(harness: Harness) -> None:
    client = harness.client
    pk = await harness.provider_key()
    model = await harness.model("gpt-4o-prod", pk["id"])
    clash = await client.post(
        "/admin/v1/models",
        json={**model["value"], "model_name": "other"},
    )
    assert (clash.status, clash.error) == (
        409,
        'display_name "gpt-4o-prod" already in use by another resource',
    )
    # a PUT never clashes with its own resource
    same = await client.put(f"/admin/v1/models/{model['id']}", json=model["value"])
    assert same.status == 200 and same.json()["revision"] == 2
    referenced = await client.delete(f"/admin/v1/provider_keys/{pk['id']}")
    assert (referenced.status, referenced.error) == (
        409,
        f'provider_keys "{pk["id"]}" is referenced by models "{model["id"]}" ("gpt-4o-prod")',
    )
    await client.post("/admin/v1/apikeys", json={"key_hash": HASH_A, "allowed_models": []})
    dup = await client.post("/admin/v1/apikeys", json={"key_hash": HASH_A, "allowed_models": []})
    assert dup.status == 409 and "key_hash" in dup.error


async def test_routing_references_and_rename(harness: Harness) -> None:
    client = harness.client
    pk = await harness.provider_key()
    target = await harness.model("gpt-4o-primary", pk["id"])
    routing = {"display_name": "chat-prod", "routing": {"targets": [{"model": "missing"}]}}
    response = await client.post("/admin/v1/models", json=routing)
    assert response.status == 400 and "routing.targets[0].model" in response.error
    routing["routing"] = {"targets": [{"model": "gpt-4o-primary"}]}
    alias = (await client.post("/admin/v1/models", json=routing)).json()
    renamed = {**target["value"], "display_name": "gpt-4o-renamed"}
    response = await client.put(f"/admin/v1/models/{target['id']}", json=renamed)
    assert response.status == 409
    assert f'referenced by models "{alias["id"]}" ("chat-prod")' in response.error
    response = await client.delete(f"/admin/v1/models/{target['id']}")
    assert response.status == 409
    # turning a routing target into a routing alias would break the reference too
    as_routing = {"display_name": "gpt-4o-primary", "routing": {"targets": [{"model": "x"}]}}
    response = await client.put(f"/admin/v1/models/{target['id']}", json=as_routing)
    assert response.status in (400, 409)
    as_routing["routing"] = {"targets": [{"model": "gpt-4o-primary"}]}
    response = await client.put(f"/admin/v1/models/{target['id']}", json=as_routing)
    assert response.status == 409
    assert (await client.delete(f"/admin/v1/models/{alias['id']}")).status == 200
    assert (await client.put(f"/admin/v1/models/{target['id']}", json=renamed)).status == 200


async def test_policies_reference_their_scope(harness: Harness) -> None:
    client = harness.client
    key = await client.post("/admin/v1/apikeys", json={"key_hash": HASH_A, "allowed_models": []})
    policy = {
        "name": "cap",
        "scope": "api_key",
        "scope_ref": "nope",
        "window": "minute",
        "max_requests": 5,
    }
    response = await client.post("/admin/v1/rate_limit_policies", json=policy)
    assert (response.status, response.error) == (400, 'scope_ref "nope" does not exist')
    policy["scope_ref"] = key.json()["id"]
    created = await client.post("/admin/v1/rate_limit_policies", json=policy)
    assert created.status == 201
    response = await client.delete(f"/admin/v1/apikeys/{key.json()['id']}")
    assert response.status == 409 and '("cap")' in response.error
    budget = {
        "name": "team-b",
        "scope": "team",
        "scope_ref": "t1",
        "limit_usd": 10,
        "period": "month",
    }
    assert (await client.post("/admin/v1/budget_policies", json=budget)).status == 201
    assert (await client.post("/admin/v1/budget_policies", json=budget)).status == 409


# -- provider key secrets -------------------------------------------------------------------


async def test_secret_is_write_only_and_kept_on_put(harness: Harness) -> None:
    client = harness.client
    pk = await harness.provider_key()
    url = f"/admin/v1/provider_keys/{pk['id']}"

    async def stored_secret() -> Any:
        record = await harness.store.get("provider_keys", pk["id"])
        assert record is not None
        return record.value["secret"]

    omitted = await client.put(url, json={"display_name": "openai-prod", "provider": "openai"})
    assert omitted.status == 200 and omitted.json()["value"]["secret"] == "***"
    assert await stored_secret() == SECRET
    masked = await client.put(url, json={"display_name": "openai-prod", "secret": "***"})
    assert masked.status == 200 and await stored_secret() == SECRET
    replaced = await client.put(url, json={"display_name": "openai-prod", "api_key": "sk-new"})
    assert replaced.json()["value"]["secret"] == "***" and await stored_secret() == "sk-new"
    assert SECRET not in (await client.get("/admin/v1/provider_keys")).body.decode()
    created = await client.put("/admin/v1/provider_keys/pk2", json={"display_name": "pk2"})
    assert (created.status, created.error) == (400, 'missing field "secret"')
    masked_new = await client.post(
        "/admin/v1/provider_keys", json={"display_name": "pk3", "secret": "***"}
    )
    assert masked_new.status == 400


# -- rotate ---------------------------------------------------------------------------------


async def test_rotate_without_grace(harness: Harness) -> None:
    client = harness.client
    body = {"key_hash": HASH_A, "allowed_models": ["m"], "disabled": True, "team_id": "t"}
    await client.put("/admin/v1/apikeys/k1", json=body)
    response = await client.post("/admin/v1/apikeys/k1/rotate")
    assert response.status == 200
    result = response.json()
    plaintext = result["plaintext"]
    assert plaintext.startswith("sk-") and len(plaintext) == 35
    int(plaintext[3:], 16)
    assert result["entry"] == {
        "id": "k1",
        "revision": 2,
        "value": {**body, "key_hash": hashlib.sha256(plaintext.encode()).hexdigest()},
    }
    again = (await client.post("/admin/v1/api_keys/k1/rotate", json={"grace_seconds": 0})).json()
    assert again["plaintext"] != plaintext and again["entry"]["revision"] == 3
    assert harness.writes == [1, 1, 1]


async def test_rotate_with_grace(harness: Harness) -> None:
    client = harness.client
    await client.put("/admin/v1/apikeys/k1", json={"key_hash": HASH_A, "allowed_models": []})
    before = time.time()
    response = await client.post("/admin/v1/apikeys/k1/rotate", json={"grace_seconds": 600})
    value = response.json()["entry"]["value"]
    assert value["previous_key_hash"] == HASH_A
    expires = value["previous_key_expires_at"]
    assert expires.endswith("Z")
    assert before + 599 <= parse_rfc3339(expires).timestamp() <= time.time() + 601
    stored = await harness.store.get("api_keys", "k1")
    assert stored is not None and stored.value == value and stored.revision == 2


async def test_rotate_errors(harness: Harness) -> None:
    client = harness.client
    missing = await client.post("/admin/v1/apikeys/nope/rotate")
    assert (missing.status, missing.error) == (404, "resource not found")
    await client.put("/admin/v1/apikeys/k1", json={"key_hash": HASH_A, "allowed_models": []})
    for body in (
        {"grace_seconds": -1},
        {"grace_seconds": 86401},
        {"grace_seconds": "5"},
        {"grace": 5},
    ):
        response = await client.post("/admin/v1/apikeys/k1/rotate", json=body)
        assert response.status == 400, body
    assert (await client.post("/admin/v1/apikeys/k1/rotate", body=b"{")).status == 400
    ok = await client.post("/admin/v1/apikeys/k1/rotate", json={"grace_seconds": 86400})
    assert ok.status == 200


# -- limits, concurrency, store failures ----------------------------------------------------


async def test_body_limit(harness: Harness) -> None:
    big = b'{"display_name": "' + b"x" * (20 * 1000 * 1000) + b'"}'
    response = await harness.client.post("/admin/v1/provider_keys", body=big)
    assert response.status == 413
    assert response.error == "request body exceeds 10485760-byte limit"
    # without a Content-Length the limit still holds while streaming
    response = await harness.client.post(
        "/admin/v1/provider_keys", body=big, headers={"content-length": "x"}
    )
    assert response.status == 413


async def test_concurrent_posts_with_same_name(harness: Harness) -> None:
    body = {"display_name": "same", "secret": "s"}
    responses = await asyncio.gather(
        *(harness.client.post("/admin/v1/provider_keys", json=body) for _ in range(50))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * 49
    assert (await harness.client.get("/admin/v1/provider_keys")).json()["total"] == 1
    assert harness.writes == [1]


async def test_store_failure_answers_503(harness: Harness, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "aisix.db") as other:
        other.execute("DROP TABLE resources")
    response = await harness.client.post(
        "/admin/v1/provider_keys", json={"display_name": "pk", "secret": "s"}
    )
    assert response.status == 503 and response.error.startswith("store unavailable: ")
    assert (await harness.client.get("/admin/v1/models")).status == 503
    assert harness.writes == []


async def test_writes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "aisix.db"
    store = SqliteStore(path)
    await store.open()
    client = Harness(store, []).client
    created = (
        await client.put("/admin/v1/apikeys/k1", json={"key_hash": HASH_B, "allowed_models": ["*"]})
    ).json()
    await client.post("/admin/v1/apikeys/k1/rotate")
    await store.close()
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        fetched = (await Harness(reopened, []).client.get("/admin/v1/apikeys/k1")).json()
        assert fetched["revision"] == 2 and fetched["value"]["allowed_models"] == ["*"]
        assert fetched["value"]["key_hash"] != created["value"]["key_hash"]
    finally:
        await reopened.close()


async def test_corrupt_database_is_a_clear_open_error(tmp_path: Path) -> None:
    path = tmp_path / "aisix.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SqliteStore(path)
    with pytest.raises(StoreOpenError) as info:
        await store.open()
    assert str(path) in str(info.value)
    await store.close()
    assert path.read_bytes() == b"this is not a database" * 100


# -- issue 12: bounds, Allow, the OpenAPI document ------------------------------------------


async def test_huge_or_odd_paging_numbers_are_400(harness: Harness) -> None:
    for query in (
        "offset=9223372036854775808",
        "offset=99999999999999999999999999",
        "limit=99999999999999999999999999",
        "offset=²",
        "limit=１",
        "offset=1e3",
    ):
        response = await harness.client.get(f"/admin/v1/provider_keys?{query}")
        assert response.status == 400, query
        assert query.split("=")[0] in response.error


async def test_405_answers_carry_allow(harness: Harness) -> None:
    client = harness.client
    patch = await client.request("PATCH", "/admin/v1/models", json={})
    assert patch.status == 405 and patch.headers["allow"] == "GET, POST"
    item = await client.request("POST", "/admin/v1/models/abc")
    assert item.status == 405 and item.headers["allow"] == "GET, PUT, DELETE"
    public = await client.post("/admin/openapi.json", auth=False)
    assert public.status == 405 and public.headers["allow"] == "GET, HEAD"
    livez = await client.request("DELETE", "/livez", auth=False)
    assert livez.status == 405 and livez.headers["allow"] == "GET, HEAD"


async def test_out_of_range_numbers_are_400_on_write(harness: Harness) -> None:
    policy = {"name": "b", "scope": "team", "scope_ref": "t", "period": "day", "limit_usd": 1e300}
    response = await harness.client.post("/admin/v1/budget_policies", json=policy)
    assert response.status == 400 and response.error.startswith("limit_usd:")
    bad_base = await harness.client.post(
        "/admin/v1/provider_keys",
        json={"display_name": "pk", "secret": SECRET, "api_base": "http://exämple.com/v1"},
    )
    assert bad_base.status == 400 and bad_base.error.startswith("api_base:")


async def test_openapi_lists_each_route_once_with_real_constraints(harness: Harness) -> None:
    document = (await harness.client.get("/admin/openapi.json", auth=False)).json()
    paths = document["paths"]
    assert not [p for p in paths if p.startswith("/admin/v1/api_keys")]
    operation_ids = [op["operationId"] for item in paths.values() for op in _operations(item)]
    assert len(operation_ids) == len(set(operation_ids))
    schemas = document["components"]["schemas"]
    assert schemas["ApiKey"]["properties"]["key_hash"]["pattern"] == "^[0-9a-f]{64}$"
    item = paths["/admin/v1/models/{id}"]
    pattern = item["parameters"][0]["schema"]["pattern"]
    assert pattern == "^(?!status$)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    put_pk = paths["/admin/v1/provider_keys/{id}"]["put"]["requestBody"]["content"]
    put_schema = schemas[put_pk["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "secret" not in put_schema.get("required", [])
    assert "secret" in schemas["ProviderKey"]["required"]
    assert schemas["BudgetPolicy"]["properties"]["limit_usd"]["maximum"] == 1e9


def _operations(item: dict[str, Any]) -> list[dict[str, Any]]:
    methods = ("get", "put", "post", "delete", "patch")
    return [op for name, op in item.items() if name in methods]


async def test_egress_policy_is_checked_on_provider_key_writes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "egress.db")
    await store.open()
    try:
        default = AsgiClient(build_admin_app(store, [ADMIN_KEY]), ADMIN_KEY)
        for base in (
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
        ):
            body = {"display_name": "pk", "secret": SECRET, "api_base": base}
            response = await default.post("/admin/v1/provider_keys", json=body)
            assert response.status == 400, base
            assert response.error.startswith("api_base: host ") and "denied" in response.error
        ok = {"display_name": "pk", "secret": SECRET, "api_base": "http://127.0.0.1:9/v1"}
        created = await default.post("/admin/v1/provider_keys", json=ok)
        assert created.status == 201
        narrow = EgressPolicy.build(["api.openai.com"], DEFAULT_DENIED_CIDRS)
        strict = AsgiClient(build_admin_app(store, [ADMIN_KEY], egress=narrow), ADMIN_KEY)
        put = await strict.put(f"/admin/v1/provider_keys/{created.json()['id']}", json=ok)
        assert (put.status, put.error) == (
            400,
            "api_base: host 127.0.0.1 is not in upstream.allowed_hosts",
        )
        fine = {**ok, "api_base": "https://api.openai.com/v1"}
        assert (
            await strict.put(f"/admin/v1/provider_keys/{created.json()['id']}", json=fine)
        ).status == 200
    finally:
        await store.close()


async def test_egress_policy_covers_a_secrets_token_url(harness: Harness) -> None:
    secret = (
        '{"tenant_id": "t", "client_id": "c", "client_secret": "entra-secret-value", '
        '"token_url": "http://169.254.169.254/token"}'
    )
    body = {
        "display_name": "azure",
        "adapter": "azure-openai",
        "api_base": "https://example.openai.azure.com",
        "secret": secret,
    }
    response = await harness.client.post("/admin/v1/provider_keys", json=body)
    assert response.status == 400
    assert response.error.startswith("secret: token_url: host 169.254.169.254")
    assert "entra-secret-value" not in response.error
