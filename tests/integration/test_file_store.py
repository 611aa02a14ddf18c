"""The read-only resources-file store (contract §3.4) and the admin API over it."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import pytest

from aisix.admin import build_admin_app
from aisix.store.base import ReadOnlyStore
from aisix.store.file import (
    FileStore,
    ResourcesFileError,
    load_resources_file,
    resource_id,
    validate_resources_file,
)
from fakes.asgi_client import AsgiClient

pytestmark = pytest.mark.anyio

NAMESPACE = uuid.UUID("63e50ab2-677a-54d3-8d1e-c0cb29ceae94")
ENV = {"OPENAI_API_KEY": "sk-openai", "APP_CALLER_KEY": "sk-app-caller"}
GOOD = """
_format_version: "1"
provider_keys:
  - {display_name: openai-prod, adapter: openai, secret: "${OPENAI_API_KEY}"}
models:
  - {display_name: gpt-4o-prod, provider: openai, model_name: gpt-4o, provider_key: openai-prod}
  - display_name: chat-prod
    routing: {targets: [{model: gpt-4o-prod}]}
api_keys:
  - {display_name: app-caller, key_env: APP_CALLER_KEY, allowed_models: ["gpt-4o-prod"]}
rate_limit_policies:
  - {name: app-cap, scope: api_key, scope_ref: app-caller, window: minute, max_requests: 60}
budget_policies:
  - {name: pk-budget, scope: provider_key, scope_ref: openai-prod, limit_usd: 50, period: month}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resources.yaml"
    path.write_text(text)
    return path


def test_ids_are_uuid5_and_sugar_is_resolved(tmp_path: Path) -> None:
    records, problems = load_resources_file(write(tmp_path, GOOD), ENV)
    assert problems == []
    by_kind = {(r.kind, r.value.get("display_name") or r.value.get("name")): r for r in records}
    pk = by_kind[("provider_keys", "openai-prod")]
    assert pk.id == str(uuid.uuid5(NAMESPACE, "provider_keys/openai-prod"))
    assert pk.value["secret"] == "sk-openai" and pk.value["strip_headers"]
    model = by_kind[("models", "gpt-4o-prod")]
    assert model.value["provider_key_id"] == pk.id and "provider_key" not in model.value
    key = by_kind[("api_keys", "app-caller")]
    assert key.id == resource_id("api_keys", "app-caller")
    assert key.value["key_hash"] == hashlib.sha256(b"sk-app-caller").hexdigest()
    assert by_kind[("rate_limit_policies", "app-cap")].value["scope_ref"] == key.id
    assert by_kind[("budget_policies", "pk-budget")].value["scope_ref"] == pk.id


def test_interpolation_and_dollar_escape(tmp_path: Path) -> None:
    text = GOOD.replace('secret: "${OPENAI_API_KEY}"', 'secret: "$$x-${OPENAI_API_KEY}-$$"')
    records, problems = load_resources_file(write(tmp_path, text), ENV)
    assert problems == []
    pk = next(r for r in records if r.kind == "provider_keys")
    assert pk.value["secret"] == "$x-sk-openai-$"


def test_unset_or_empty_variable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    problems = validate_resources_file(path, {"APP_CALLER_KEY": "k", "OPENAI_API_KEY": ""})
    assert problems[0] == (
        'provider_keys[0] ("openai-prod"): '
        'environment variable "OPENAI_API_KEY" is not set or empty'
    )
    problems = validate_resources_file(path, {"OPENAI_API_KEY": "k"})
    assert any('api_keys[0] ("app-caller")' in p and "APP_CALLER_KEY" in p for p in problems)


def test_errors_are_collected_and_scoped(tmp_path: Path) -> None:
    text = """
_format_version: "1"
provider_keys:
  - {display_name: openai-prod, secret: s}
  - {display_name: openai-prod, secret: t}
models:
  - {display_name: a, provider: openai, model_name: x, provider_key: openai-prod}
  - {display_name: b, provider: openai, model_name: x, provider_key: openai-prod, timout: 5}
  - {display_name: gpt-4o, provider: openai, model_name: x, provider_key: pk-x}
  - {display_name: r, routing: {targets: [{model: nope}]}}
api_keys:
  - {key_hash: "%s", allowed_models: []}
rate_limit_policies:
  - {name: cap, scope: model, scope_ref: missing, window: minute, max_requests: 1}
extra: 1
""" % ("a" * 64)
    problems = validate_resources_file(write(tmp_path, text), {})
    assert problems == [
        'unknown key "extra"',
        'provider_keys[1] ("openai-prod"): display_name "openai-prod" already in use by another '
        "resource",
        'models[1] ("b"): unknown field "timout"',
        'models[2] ("gpt-4o"): provider_key "pk-x" is not defined',
        'models[3] ("r"): routing.targets[0].model "nope" is not a single-target model',
        'api_keys[0]: missing field "display_name" (API keys in a resources file need one)',
        'rate_limit_policies[0] ("cap"): scope_ref "missing" does not exist',
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("provider_keys: []\n", 'missing key "_format_version"'),
        ('_format_version: "2"\n', '_format_version: must be "1"'),
        ("_format_version: '1'\nmodels: {a: 1}\n", "models: must be a list"),
        ("_format_version: '1'\nmodels: [1]\n", "models[0]: must be a mapping"),
        ("_format_version: '1'\napi_keys: []\napikeys: []\n", 'only one of "api_keys"'),
        ("- a\n", "must hold a mapping"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_document_level_problems(tmp_path: Path, text: str, problem: str) -> None:
    problems = validate_resources_file(write(tmp_path, text), {})
    assert any(problem in p for p in problems), problems


def test_apikeys_alias_and_timestamps(tmp_path: Path) -> None:
    text = """
_format_version: "1"
apikeys:
  - {display_name: k, key_hash: "%s", allowed_models: [], expires_at: 2030-01-01T00:00:00Z}
""" % ("b" * 64)
    records, problems = load_resources_file(write(tmp_path, text), {})
    assert problems == []
    assert records[0].kind == "api_keys"
    assert records[0].value["expires_at"] == "2030-01-01T00:00:00Z"


def test_missing_file(tmp_path: Path) -> None:
    problems = validate_resources_file(tmp_path / "absent.yaml", {})
    assert len(problems) == 1 and "cannot read resources file" in problems[0]


async def test_store_reads_and_revisions_across_reloads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    store = FileStore(path, ENV)
    await store.open()
    records, generation = await store.load_all()
    assert generation == 1 and {r.revision for r in records} == {1}
    page, total = await store.list("models", 1, 1)
    assert total == 2 and page[0].value["display_name"] == "chat-prod"
    assert await store.get("models", "nope") is None

    changes = store.changes()
    waiter = asyncio.ensure_future(changes.__anext__())
    assert await store.reload() is False  # unchanged file: nothing to apply
    await asyncio.sleep(0)
    assert not waiter.done()

    path.write_text(GOOD.replace("model_name: gpt-4o,", "model_name: gpt-4o-mini,"))
    assert await store.reload() is True
    assert await asyncio.wait_for(waiter, 1) == 2
    model_id = resource_id("models", "gpt-4o-prod")
    changed = await store.get("models", model_id)
    assert changed is not None and changed.revision == 2
    untouched = await store.get("provider_keys", resource_id("provider_keys", "openai-prod"))
    assert untouched is not None and untouched.revision == 1


async def test_invalid_reload_keeps_current_records(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    store = FileStore(path, ENV)
    await store.open()
    path.write_text(GOOD.replace("provider_key: openai-prod", "provider_key: pk-x"))
    with pytest.raises(ResourcesFileError) as info:
        await store.reload()
    assert info.value.problems == [
        'models[0] ("gpt-4o-prod"): provider_key "pk-x" is not defined',
        'models[1] ("chat-prod"): routing.targets[0].model "gpt-4o-prod" is not a single-target '
        "model",
    ]
    records, generation = await store.load_all()
    assert generation == 1 and len(records) == 6


async def test_invalid_file_fails_open(tmp_path: Path) -> None:
    store = FileStore(write(tmp_path, '_format_version: "1"\nmodels: [{display_name: m}]\n'), {})
    with pytest.raises(ResourcesFileError):
        await store.open()


async def test_admin_api_is_read_only_over_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    store = FileStore(path, ENV)
    await store.open()
    client = AsgiClient(build_admin_app(store, ["adm"]), "adm")
    listed = (await client.get("/admin/v1/provider_keys")).json()
    assert listed["total"] == 1 and listed["list"][0]["value"]["secret"] == "***"
    message = f"resources are file-managed ({path}): edit the file and send SIGHUP"
    key_id = resource_id("api_keys", "app-caller")
    for method, url in (
        ("POST", "/admin/v1/models"),
        ("PUT", "/admin/v1/models/x"),
        ("DELETE", f"/admin/v1/apikeys/{key_id}"),
        ("POST", f"/admin/v1/apikeys/{key_id}/rotate"),
    ):
        # answered before the body is read: even an oversized body gets the 405
        response = await client.request(method, url, body=b"x" * (11 * 1024 * 1024))
        assert (response.status, response.error) == (405, message), url
        unauthenticated = await client.request(method, url, auth=False)
        assert unauthenticated.status == 401 and str(path) not in unauthenticated.error
    with pytest.raises(ReadOnlyStore):
        await store.transact(lambda tx: None)
