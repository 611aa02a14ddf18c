"""Bad input gets a clear 4xx in the right envelope and never takes the gateway down
(contract §4.3, §6.3, §6.4, design §4). Every test ends by checking `/livez`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import orjson
from e2e_helpers import ALIAS, CALLER_KEY, Gateway, GatewayFactory, HttpResponse, Seed, wait_for

from fakes.openai_upstream import FakeOpenAIUpstream

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
CHAT = {"model": ALIAS, "messages": MESSAGES}
TWENTY_MB = 20 * 1024 * 1024


def proxy_error(response: HttpResponse, status: int, err_type: str) -> dict[str, Any]:
    assert response.status == status, (response.status, response.text[:500])
    body = response.json
    assert isinstance(body, dict) and set(body) == {"error"}, response.text[:500]
    error = body["error"]
    assert error["type"] == err_type, error
    assert isinstance(error["message"], str) and error["message"]
    for optional in ("param", "code"):
        assert error.get(optional, "absent") not in (None, ""), f"empty {optional} must be omitted"
    return dict(error)


def admin_error(response: HttpResponse, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status in statuses, (response.status, response.text[:500])
    body = response.json
    assert isinstance(body, dict) and isinstance(body.get("error_msg"), str), response.text[:500]
    return str(body["error_msg"])


def post_chat(gw: Gateway, data: bytes, **headers: str) -> HttpResponse:
    return gw.proxy(
        "POST", "/v1/chat/completions", data=data, api_key=CALLER_KEY, headers=headers or None
    )


def totals(gw: Gateway) -> dict[str, int]:
    kinds = ("provider_keys", "models", "apikeys", "rate_limit_policies", "budget_policies")
    return {kind: gw.admin("GET", f"/{kind}").json["total"] for kind in kinds}


def raw_head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def huge_chat_body(size: int) -> bytes:
    prefix = b'{"model": "' + ALIAS.encode() + b'", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    return prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix


# ---------------------------------------------------------------------------------------------
# proxy
# ---------------------------------------------------------------------------------------------


def test_proxy_malformed_json(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    for data in (b'{"model": "gpt-4o-prod", "messages": [', b"", b"not json", b"[]", b"null", b"7"):
        error = proxy_error(post_chat(gw, data), 400, "invalid_request_error")
        assert error["message"].startswith("request payload is invalid"), error
    assert fake_openai.model_requests() == []
    gw.assert_alive()


def test_proxy_wrong_types(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": 5, "messages": MESSAGES}, "model"),
        ({"model": None, "messages": MESSAGES}, "model"),
        ({"messages": MESSAGES}, "model"),
        ({"model": ALIAS, "messages": "hi"}, "messages"),
        ({"model": ALIAS, "messages": []}, "messages"),
        ({"model": ALIAS}, "messages"),
        ({"model": ALIAS, "messages": [{"role": "user", "content": 5}]}, "content"),
        ({"model": ALIAS, "messages": ["hi"]}, "messages"),
    ]
    for body, field in cases:
        error = proxy_error(post_chat(gw, orjson.dumps(body)), 400, "invalid_request_error")
        assert field in error["message"] or error.get("param", "").endswith(field), (body, error)
    assert fake_openai.model_requests() == []
    gw.assert_alive()


def test_proxy_body_over_20mb_is_413(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    body = huge_chat_body(TWENTY_MB)
    auth = {"Authorization": f"Bearer {CALLER_KEY}"}
    response = gw.raw_proxy(raw_head("POST", "/v1/chat/completions", auth, len(body)), body)
    error = proxy_error(response, 413, "request_too_large")
    assert error["message"] == "request body exceeds 10485760-byte limit"
    assert response.headers.get("x-aisix-request-id")

    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    response = gw.raw_proxy(raw_head("POST", "/v1/chat/completions", auth, None), chunked)
    proxy_error(response, 413, "request_too_large")
    assert fake_openai.model_requests() == []
    gw.assert_alive()
    assert gw.proxy("POST", "/v1/chat/completions", CHAT, api_key=CALLER_KEY).status == 200


def test_proxy_configured_body_limit(
    gateway: GatewayFactory, fake_openai: FakeOpenAIUpstream
) -> None:
    gw = gateway({"proxy": {"request_body_limit_bytes": 2000}})
    gw.seed(fake_openai.url)
    assert post_chat(gw, huge_chat_body(1900)).status == 200
    error = proxy_error(post_chat(gw, huge_chat_body(2001)), 413, "request_too_large")
    assert error["message"] == "request body exceeds 2000-byte limit"
    gw.assert_alive()


def test_proxy_non_utf8(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    data = b'{"model": "gpt-4o-prod", "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}'
    proxy_error(post_chat(gw, data), 400, "invalid_request_error")
    proxy_error(post_chat(gw, b"\xff\xfe\x00{"), 400, "invalid_request_error")

    body = orjson.dumps(CHAT)
    head = raw_head(
        "POST", "/v1/chat/completions", {"Authorization": "Bearer sk-\xff\xfe"}, len(body)
    )
    proxy_error(gw.raw_proxy(head, body), 401, "invalid_api_key")
    headers = {"Authorization": f"Bearer {CALLER_KEY}", "x-request-id": "req-\xff\xe9"}
    response = gw.raw_proxy(raw_head("POST", "/v1/chat/completions", headers, len(body)), body)
    assert response.status == 200, response.text
    assert uuid.UUID(response.headers["x-aisix-request-id"]).version == 4
    assert fake_openai.model_requests()[-1].json["messages"] == MESSAGES
    gw.assert_alive()


def test_proxy_unknown_route_and_method(seeded: tuple[Gateway, Seed]) -> None:
    gw, _ = seeded
    error = proxy_error(
        gw.proxy("GET", "/v1/nope", api_key=CALLER_KEY), 404, "invalid_request_error"
    )
    assert error["code"] == "unknown_route"
    error = proxy_error(
        gw.proxy("DELETE", "/v1/chat/completions", api_key=CALLER_KEY), 405, "invalid_request_error"
    )
    assert error["code"] == "unknown_route"
    gw.assert_alive()


def test_1000_concurrent_requests(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    url = gw.proxy_url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {CALLER_KEY}"}

    async def one(session: aiohttp.ClientSession, i: int) -> tuple[int, Any]:
        body = {"model": ALIAS, "messages": [{"role": "user", "content": f"message {i}"}]}
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def run_all() -> list[tuple[int, Any]]:
        connector = aiohttp.TCPConnector(limit=1000)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return await asyncio.gather(*(one(session, i) for i in range(1000)))

    results = asyncio.run(run_all())
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    for i, (_, body) in enumerate(results):
        assert body["model"] == ALIAS
        assert body["choices"][0]["message"]["content"] == f"echo: message {i}"
    assert len(fake_openai.model_requests()) == 1000
    gw.assert_alive()


# ---------------------------------------------------------------------------------------------
# admin
# ---------------------------------------------------------------------------------------------


def test_admin_unknown_fields_are_named(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    before = totals(gw)
    provider_key = {"display_name": "pk2", "secret": "sk-x", "secrett": "oops"}
    assert "secrett" in admin_error(gw.admin("POST", "/provider_keys", provider_key), 400)

    message = admin_error(
        gw.admin(
            "POST",
            "/apikeys",
            {"key_hash": "a" * 64, "allowed_models": [], "max_budget_usd": 5},
        ),
        400,
    )
    assert message == 'unknown field "max_budget_usd"'

    routing = {
        "display_name": "chat-route",
        "routing": {"targets": [{"model": ALIAS, "wieght": 2}]},
    }
    message = admin_error(gw.admin("POST", "/models", routing), 400)
    assert "routing.targets[0].wieght" in message

    limited = {"key_hash": "b" * 64, "allowed_models": [], "rate_limit": {"rpmm": 5}}
    assert "rate_limit.rpmm" in admin_error(gw.admin("POST", "/apikeys", limited), 400)

    current = gw.admin("GET", f"/models/{seed.model_id}").json["value"]
    put = gw.admin("PUT", f"/models/{seed.model_id}", {**current, "tmeout": 5})
    assert "tmeout" in admin_error(put, 400)
    assert gw.admin("GET", f"/models/{seed.model_id}").json["revision"] == 1
    assert totals(gw) == before
    gw.assert_alive()


def test_admin_malformed_json_and_wrong_types(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    before = totals(gw)
    for data in (b'{"display_name": ', b"", b"[]", b"null", b'"string"'):
        admin_error(gw.admin("POST", "/provider_keys", data=data), 400)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("provider_keys", {"display_name": 5, "secret": "sk-x"}, "display_name"),
        ("provider_keys", {"display_name": "pk", "secret": ""}, "secret"),
        ("provider_keys", {"display_name": "pk", "secret": "x", "adapter": "nope"}, "adapter"),
        ("apikeys", {"allowed_models": []}, "key_hash"),
        ("apikeys", {"key_hash": "XYZ", "allowed_models": []}, "key_hash"),
        ("apikeys", {"key_hash": "c" * 64, "allowed_models": "gpt-4o-prod"}, "allowed_models"),
        ("apikeys", {"key_hash": "c" * 64, "allowed_models": [], "disabled": "yes"}, "disabled"),
        (
            "apikeys",
            {"key_hash": "c" * 64, "allowed_models": [], "expires_at": "soon"},
            "expires_at",
        ),
        (
            "models",
            {
                "display_name": "m",
                "provider": "openai",
                "model_name": "x",
                "provider_key_id": "nope",
            },
            "provider_key_id",
        ),
        (
            "models",
            {
                "display_name": "m",
                "provider": "openai",
                "model_name": "x",
                "provider_key_id": seed.provider_key_id,
                "timeout": -1,
            },
            "timeout",
        ),
    ]
    for kind, value, field in cases:
        message = admin_error(gw.admin("POST", f"/{kind}", value), 400)
        assert field in message, (kind, value, message)
    missing = admin_error(gw.admin("POST", "/apikeys", {"allowed_models": []}), 400)
    assert missing == 'missing field "key_hash"'
    assert totals(gw) == before
    gw.assert_alive()


def test_admin_body_over_20mb(seeded: tuple[Gateway, Seed]) -> None:
    gw, _ = seeded
    before = totals(gw)
    prefix = b'{"display_name": "'
    suffix = b'", "secret": "sk-x"}'
    body = prefix + b"p" * (TWENTY_MB - len(prefix) - len(suffix)) + suffix
    auth = {"Authorization": "Bearer test-admin-key-0123456789"}
    response = gw.raw_admin(raw_head("POST", "/admin/v1/provider_keys", auth, len(body)), body)
    admin_error(response, (400, 413))
    assert totals(gw) == before
    gw.assert_alive()
    assert gw.admin("GET", "/livez").status == 200


def test_admin_non_utf8(seeded: tuple[Gateway, Seed]) -> None:
    gw, _ = seeded
    before = totals(gw)
    data = b'{"display_name": "pk-\xff\xfe", "secret": "sk-x"}'
    admin_error(gw.admin("POST", "/provider_keys", data=data), 400)
    assert totals(gw) == before
    gw.assert_alive()


def test_admin_invalid_ids(seeded: tuple[Gateway, Seed]) -> None:
    gw, seed = seeded
    pk = {"display_name": "pk-chosen", "secret": "sk-x"}
    assert admin_error(gw.admin("GET", f"/models/{uuid.uuid4()}"), 404) == "resource not found"
    admin_error(gw.admin("GET", "/models/does-not-exist"), 404)
    admin_error(gw.admin("DELETE", f"/apikeys/{uuid.uuid4()}"), 404)
    admin_error(gw.admin("POST", "/apikeys/does-not-exist/rotate"), 404)
    admin_error(gw.admin("GET", "/nonexistent_kind"), 404)
    admin_error(gw.admin("GET", "/guardrails"), 404)
    for bad in ("bad%20id", "status", "-leading-dash", ".dot", "x" * 65, "m%C3%B6del", "a%2Fb"):
        admin_error(gw.admin("PUT", f"/provider_keys/{bad}", pk), (400, 404))
    admin_error(gw.admin("PUT", "/provider_keys/status", pk), 400)
    admin_error(gw.admin("PUT", "/provider_keys/" + "x" * 65, pk), 400)
    admin_error(gw.admin("GET", "/models/..%2F..%2Fetc%2Fpasswd"), (400, 404))

    chosen = "A" + "b.c_d-" * 10 + "xyz"  # 64 characters, the longest valid id
    assert len(chosen) == 64
    created = gw.admin("PUT", f"/provider_keys/{chosen}", pk)
    assert created.status == 201, created.text
    assert created.json["id"] == chosen
    assert created.json["revision"] == 1
    assert gw.admin("GET", f"/provider_keys/{chosen}").json["value"]["secret"] == "***"
    wait_for(lambda: gw.admin("DELETE", f"/provider_keys/{chosen}").status == 200, 2.0, "delete")
    admin_error(gw.admin("GET", f"/provider_keys/{chosen}"), 404)
    assert gw.admin("GET", f"/provider_keys/{seed.provider_key_id}").status == 200
    gw.assert_alive()
