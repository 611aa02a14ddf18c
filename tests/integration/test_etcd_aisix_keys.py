"""AISIX's etcd keys against a real etcd (issue 14): `user` + `password_env` authenticate, and
`env_id` scopes every read and write to `<prefix>/<env_id>/`."""

from __future__ import annotations

import orjson
import pytest

from aisix.settings import load_settings
from aisix.store.etcd import EtcdStore
from fakes.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_env(server: EtcdServer, **extra: str) -> dict[str, str]:
    return {
        "AISIX_ADMIN__ADMIN_KEYS": "k",
        "AISIX_ETCD__ENDPOINTS": server.url,
        "AISIX_ETCD__PREFIX": "/aisix",
        **extra,
    }


async def test_env_id_scopes_the_prefix(own_etcd: EtcdServer) -> None:
    value = {"display_name": "k", "secret": "s"}
    own_etcd.put("/aisix/prod/provider_keys/pk-prod", orjson.dumps(value))
    own_etcd.put("/aisix/provider_keys/pk-root", orjson.dumps(value))
    own_etcd.put("/aisix/staging/provider_keys/pk-staging", orjson.dumps(value))
    settings = load_settings(None, settings_env(own_etcd, AISIX_ETCD__ENV_ID="prod"))
    assert settings.etcd is not None
    store = EtcdStore(settings.etcd)
    await store.open()
    try:
        records, _ = await store.load_all()
        assert [r.id for r in records] == ["pk-prod"]
        assert store.location == own_etcd.url + "/aisix/prod"
        await store.transact(lambda tx: tx.put("models", "m1", {"display_name": "m"}))
        assert own_etcd.get("/aisix/prod/models/m1") is not None
        assert own_etcd.get("/aisix/models/m1") is None
    finally:
        await store.close()


async def test_user_and_password_env(own_etcd: EtcdServer) -> None:
    own_etcd.call("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    own_etcd.call("/v3/auth/role/add", {"name": "root"})
    own_etcd.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    own_etcd.call("/v3/auth/enable", {})
    env = settings_env(
        own_etcd, AISIX_ETCD__USER="root", AISIX_ETCD__PASSWORD_ENV="ETCD_PW", ETCD_PW="rootpw"
    )
    settings = load_settings(None, env)
    assert settings.etcd is not None
    store = EtcdStore(settings.etcd)
    await store.open()
    try:
        await store.transact(lambda tx: tx.put("models", "m1", {"display_name": "m"}))
        records, _ = await store.load_all()
        assert [r.id for r in records] == ["m1"]
    finally:
        await store.close()
