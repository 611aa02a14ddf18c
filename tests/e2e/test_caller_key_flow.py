"""Caller-key flow end to end (contract §5.4, §6, §7): the official `openai` SDK against a running
`aisix` in front of the fake OpenAI upstream."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import openai
import orjson
import pytest
from e2e_helpers import (
    ALIAS,
    CALLER_KEY,
    PROVIDER_SECRET,
    UPSTREAM_MODEL,
    Gateway,
    GatewayFactory,
    HttpResponse,
    Seed,
    sha256_hex,
    wait_for,
)

from aisix import demo_upstream as demo
from fakes.openai_upstream import FakeOpenAIUpstream, Reply

MESSAGES: list[Any] = [{"role": "user", "content": "Hello from AISIX."}]
CHAT = {"model": ALIAS, "messages": MESSAGES}
USAGE = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}


def chat(gw: Gateway, api_key: str | None = CALLER_KEY, **kwargs: Any) -> HttpResponse:
    return gw.proxy(
        "POST", "/v1/chat/completions", kwargs.pop("json", CHAT), api_key=api_key, **kwargs
    )


def error_of(response: HttpResponse, status: int) -> dict[str, Any]:
    """Assert an OpenAI error envelope with `status`; return its `error` object."""
    assert response.status == status, (response.status, response.text)
    body = response.json
    assert isinstance(body, dict) and set(body) == {"error"}, response.text
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    for optional in ("param", "code"):
        assert error.get(optional, "absent") not in (None, ""), f"empty {optional} must be omitted"
    return dict(error)


def assert_no_secrets_upstream(fake: FakeOpenAIUpstream, *secrets: str) -> None:
    for recorded in fake.requests:
        for name, value in recorded.headers.items():
            for secret in secrets:
                assert secret not in value, f"{secret!r} leaked upstream in header {name}"
        for secret in secrets:
            assert secret.encode() not in recorded.body


def wait_status(gw: Gateway, api_key: str, status: int, timeout: float = 2.0) -> HttpResponse:
    def attempt() -> HttpResponse | None:
        response = chat(gw, api_key)
        return response if response.status == status else None

    return wait_for(attempt, timeout, f"status {status} for key {api_key[:6]}…")


# ---------------------------------------------------------------------------------------------
# chat
# ---------------------------------------------------------------------------------------------


def test_chat_non_stream(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(usage=USAGE))
    client = gw.openai_client(
        default_headers={"x-api-key": "sk-inbound-x-api-key", "cookie": "session=secret-cookie"}
    )
    raw = client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=MESSAGES, extra_body={"custom_field": {"kept": True}}
    )
    completion = raw.parse()
    assert completion.model == ALIAS
    assert completion.choices[0].message.content == "echo: Hello from AISIX."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(include=set(USAGE)) == USAGE  # passed through exactly

    request_id = raw.headers.get("x-aisix-request-id")
    assert request_id
    assert raw.headers.get("x-aisix-call-id") == request_id
    assert (raw.headers.get("server") or "").startswith("aisix/")

    [upstream] = fake_openai.model_requests()
    assert upstream.path == "/v1/chat/completions"
    assert upstream.json["model"] == UPSTREAM_MODEL
    assert upstream.json["messages"] == MESSAGES
    assert upstream.json["custom_field"] == {"kept": True}  # unknown fields forwarded
    assert upstream.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert upstream.headers["content-type"].startswith("application/json")
    assert upstream.headers["x-aisix-request-id"] == request_id
    assert upstream.headers.get("user-agent", "").startswith("aisix/")
    assert "x-api-key" not in upstream.headers
    assert "cookie" not in upstream.headers
    assert not [h for h in upstream.headers if h.startswith("x-stainless")]  # no client header
    assert_no_secrets_upstream(fake_openai, CALLER_KEY, "sk-inbound-x-api-key", "secret-cookie")


def test_access_log_records_request_without_secrets(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    response = chat(gw)
    assert response.status == 200
    request_id = response.headers["x-aisix-request-id"]

    def record() -> dict[str, Any] | None:
        return next((r for r in gw.access_log_lines() if r["request_id"] == request_id), None)

    entry = wait_for(record, 3.0, "the access log line")
    assert entry["status"] == 200
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/chat/completions"
    assert entry["model"] == ALIAS
    assert entry["api_key_id"] == seed.api_key_id
    assert entry["upstream_model"] == UPSTREAM_MODEL
    assert entry["stream"] is False
    for text in (gw.stdout_text(), gw.stderr_text()):
        assert CALLER_KEY not in text
        assert PROVIDER_SECRET not in text
        assert "Hello from AISIX." not in text  # no prompts in logs


def test_chat_stream_without_include_usage(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    client = gw.openai_client()
    chunks = list(client.chat.completions.create(model=ALIAS, messages=MESSAGES, stream=True))
    assert chunks
    assert {c.model for c in chunks} == {ALIAS}
    assert all(c.choices for c in chunks), "usage-only chunk sent although not requested"
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "echo: Hello from AISIX."
    assert chunks[-1].choices[0].finish_reason == "stop"

    [upstream] = fake_openai.model_requests()
    assert upstream.json["model"] == UPSTREAM_MODEL
    assert upstream.json["stream"] is True
    assert upstream.json["stream_options"]["include_usage"] is True  # forced upstream
    assert "text/event-stream" in upstream.headers.get("accept", "")
    assert upstream.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"


def test_chat_stream_with_include_usage(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(usage=USAGE))
    client = gw.openai_client()
    chunks = list(
        client.chat.completions.create(
            model=ALIAS, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert {c.model for c in chunks} == {ALIAS}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(include=set(USAGE)) == USAGE
    assert [c for c in chunks if not c.choices] == [chunks[-1]]


def test_chat_stream_raw_sse_ends_with_done(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    fake_openai.script(Reply(), Reply(omit_done=True))
    for _ in range(2):  # the second upstream stream omits [DONE]; the client still gets it
        response = chat(gw, json={**CHAT, "stream": True})
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get("x-aisix-request-id")
        data = response.sse_data()
        assert data[-1] == "[DONE]"
        assert data.count("[DONE]") == 1
        assert response.body.rstrip(b"\r\n").endswith(b"data: [DONE]")
        chunks = [orjson.loads(d) for d in data[:-1]]
        assert {c["model"] for c in chunks} == {ALIAS}
        assert all("usage" not in c or c["usage"] is None for c in chunks)


def test_mid_stream_upstream_failure_sends_error_event(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    # role + 2 content chunks, then the connection drops; the delay makes the first byte reach
    # the client before the failure is seen
    fake_openai.script(Reply(cut_after_chunks=3, chunks=6, chunk_delay_s=0.05))
    response = chat(gw, json={**CHAT, "stream": True})
    assert response.status == 200
    data = response.sse_data()
    assert "[DONE]" not in data
    events = [orjson.loads(d) for d in data]
    assert len(events) >= 2
    *chunks, last = events
    assert set(last) == {"error"}
    assert isinstance(last["error"]["message"], str) and last["error"]["message"]
    assert isinstance(last["error"]["type"], str) and last["error"]["type"]
    assert chunks, "chunks received before the failure must be relayed"
    assert {c["model"] for c in chunks} == {ALIAS}
    finish = [ch.get("finish_reason") for c in chunks for ch in c.get("choices", [])]
    assert not any(finish), "no invented finish_reason after a failure"
    assert len(fake_openai.model_requests()) == 1  # no retry after the first byte
    gw.assert_alive()


def test_completions(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    client = gw.openai_client()
    completion = client.completions.create(model=ALIAS, prompt="say hi", max_tokens=5)
    assert completion.model == ALIAS
    assert completion.choices[0].text == "echo: say hi"
    [upstream] = fake_openai.model_requests()
    assert upstream.path == "/v1/completions"
    assert upstream.json["model"] == UPSTREAM_MODEL
    assert upstream.json["prompt"] == "say hi"


# ---------------------------------------------------------------------------------------------
# models and embeddings
# ---------------------------------------------------------------------------------------------


def test_models_list_single_target_sorted_and_filtered(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    for name in ("zeta-model", "alpha-model", "hidden-model"):
        gw.create_model(name, seed.provider_key_id)
    gw.create("models", {"display_name": "chat-route", "routing": {"targets": [{"model": ALIAS}]}})
    listed = ["zeta-model", ALIAS, "alpha-model", "chat-route", "does-not-exist"]
    gw.create_api_key("sk-list-caller", listed)
    gw.create_api_key("sk-star-caller", ["*"])
    gw.create_api_key("sk-glob-caller", ["*-model"])
    gw.wait_for_key("sk-list-caller", "alpha-model")
    gw.wait_for_key("sk-star-caller", "hidden-model")
    gw.wait_for_key("sk-glob-caller", "zeta-model")

    page = gw.openai_client("sk-list-caller").models.list()
    assert [m.id for m in page] == ["alpha-model", ALIAS, "zeta-model"]
    assert {m.owned_by for m in page} == {"openai"}
    assert {m.object for m in page} == {"model"}
    assert all(abs(m.created - time.time()) < 120 for m in page)

    everything = [m.id for m in gw.openai_client("sk-star-caller").models.list()]
    assert everything == ["alpha-model", ALIAS, "hidden-model", "zeta-model"]
    globbed = [m.id for m in gw.openai_client("sk-glob-caller").models.list()]
    assert globbed == ["alpha-model", "hidden-model", "zeta-model"]

    raw = gw.proxy("GET", "/v1/models", api_key=CALLER_KEY)
    assert raw.json == {"object": "list", "data": raw.json["data"]}
    assert [m["id"] for m in raw.json["data"]] == [ALIAS]

    # a routing alias is callable when allowed although it is never listed
    routed = gw.openai_client("sk-list-caller").chat.completions.create(
        model="chat-route", messages=MESSAGES
    )
    assert routed.model == "chat-route"
    assert fake_openai.model_requests()[-1].json["model"] == UPSTREAM_MODEL


def test_embeddings(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, seed = seeded
    gw.create_model("embed-prod", seed.provider_key_id, model_name="text-embedding-3-small")
    gw.create_api_key("sk-embed-caller", ["embed-prod"])
    gw.wait_for_key("sk-embed-caller", "embed-prod")
    client = gw.openai_client("sk-embed-caller")
    inputs = ["one", "two", "three", "four"]
    dims = demo.DEFAULT_EMBEDDING_DIMENSIONS
    expected = [demo.embedding_vector(s, dims) for s in inputs]

    result = client.embeddings.create(model="embed-prod", input=inputs)  # SDK asks for base64
    assert result.model == "embed-prod"
    assert [d.index for d in result.data] == [0, 1, 2, 3]
    assert [d.embedding for d in result.data] == expected

    result = client.embeddings.create(model="embed-prod", input=inputs, encoding_format="float")
    assert [d.embedding for d in result.data] == expected
    assert result.usage.prompt_tokens == sum(demo.estimate_tokens(s) for s in inputs)

    first, second = fake_openai.model_requests()
    assert first.path == second.path == "/v1/embeddings"
    assert first.json["model"] == "text-embedding-3-small"
    assert first.json["input"] == inputs
    assert second.json["encoding_format"] == "float"
    assert first.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"


# ---------------------------------------------------------------------------------------------
# authentication and authorisation
# ---------------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    with pytest.raises(openai.AuthenticationError) as info:
        gw.openai_client("sk-wrong-key").chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.type == "invalid_api_key"

    error = error_of(chat(gw, "sk-wrong-key"), 401)
    assert error == {"message": "invalid API key", "type": "invalid_api_key"}

    for headers in (
        {},
        {"Authorization": "Basic c2stYXBwLWNhbGxlcg=="},
        {"Authorization": "Bearer "},
    ):
        response = gw.proxy("POST", "/v1/chat/completions", CHAT, headers=headers)
        error = error_of(response, 401)
        assert error["type"] == "invalid_api_key"
        assert response.headers.get("x-aisix-request-id")
    # a malformed Authorization is refused even when x-api-key holds a good key
    response = gw.proxy(
        "POST",
        "/v1/chat/completions",
        CHAT,
        headers={"Authorization": "Token abc", "x-api-key": CALLER_KEY},
    )
    error_of(response, 401)
    missing = error_of(gw.proxy("POST", "/v1/chat/completions", CHAT), 401)
    assert missing["message"] == "missing or malformed Authorization header"
    assert fake_openai.model_requests() == []


def test_disabled_and_expired_keys_are_401_with_codes(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    gw.create_api_key("sk-disabled-caller", [ALIAS], disabled=True)
    gw.create_api_key("sk-expired-caller", [ALIAS], expires_at="2020-01-01T00:00:00Z")

    disabled = wait_status(gw, "sk-disabled-caller", 401)
    wait_for(lambda: error_of(chat(gw, "sk-disabled-caller"), 401).get("code"), 2.0, "code")
    error = error_of(chat(gw, "sk-disabled-caller"), 401)
    assert disabled.status == 401
    assert error == {
        "message": "API key has been disabled",
        "type": "invalid_api_key",
        "code": "api_key_disabled",
    }
    with pytest.raises(openai.AuthenticationError) as info:
        gw.openai_client("sk-disabled-caller").chat.completions.create(
            model=ALIAS, messages=MESSAGES
        )
    assert info.value.code == "api_key_disabled"

    with pytest.raises(openai.AuthenticationError) as info:
        gw.openai_client("sk-expired-caller").chat.completions.create(
            model=ALIAS, messages=MESSAGES
        )
    assert info.value.code == "api_key_expired"
    error = error_of(chat(gw, "sk-expired-caller"), 401)
    assert error == {
        "message": "API key has expired",
        "type": "invalid_api_key",
        "code": "api_key_expired",
    }

    assert fake_openai.model_requests() == []

    # disabling a working key takes effect on the next requests
    current = gw.admin("GET", f"/apikeys/{seed.api_key_id}").json["value"]
    updated = gw.admin("PUT", f"/apikeys/{seed.api_key_id}", {**current, "disabled": True})
    assert updated.status == 200, updated.text
    assert updated.json["revision"] == 2
    wait_status(gw, CALLER_KEY, 401, timeout=1.0)
    error = error_of(chat(gw), 401)
    assert error["code"] == "api_key_disabled"


def test_alias_outside_allowlist_is_403(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    gw.create_model("other-model", seed.provider_key_id)
    gw.create_api_key("sk-nothing-caller", [])
    wait_for(lambda: chat(gw, json={**CHAT, "model": "other-model"}).status == 403, 2.0, "403")

    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.openai_client().chat.completions.create(model="other-model", messages=MESSAGES)
    assert info.value.type == "permission_denied"
    error = error_of(chat(gw, json={**CHAT, "model": "other-model"}), 403)
    assert error == {
        "message": 'API key is not allowed to use model "other-model"',
        "type": "permission_denied",
    }

    wait_for(lambda: chat(gw, "sk-nothing-caller").status == 403, 2.0, "403 for []")
    with pytest.raises(openai.PermissionDeniedError):
        gw.openai_client("sk-nothing-caller").chat.completions.create(
            model=ALIAS, messages=MESSAGES
        )
    assert gw.openai_client("sk-nothing-caller").models.list().data == []
    assert fake_openai.model_requests() == []


def test_unknown_alias_is_404(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    with pytest.raises(openai.NotFoundError) as info:
        gw.openai_client().chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.type == "model_not_found"
    error = error_of(chat(gw, json={**CHAT, "model": "no-such-model"}), 404)
    assert error == {"message": 'model "no-such-model" not found', "type": "model_not_found"}

    gw.create_api_key("sk-nothing-caller", [])
    wait_for(lambda: chat(gw, "sk-nothing-caller").status == 403, 2.0, "key to exist")
    error_of(chat(gw, "sk-nothing-caller", json={**CHAT, "model": "no-such-model"}), 404)
    assert fake_openai.model_requests() == []


def test_x_api_key_authentication(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, _ = seeded
    response = chat(gw, None, headers={"x-api-key": CALLER_KEY})
    assert response.status == 200, response.text
    assert response.json["model"] == ALIAS
    [upstream] = fake_openai.model_requests()
    assert "x-api-key" not in upstream.headers
    assert upstream.headers["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert_no_secrets_upstream(fake_openai, CALLER_KEY)
    error_of(chat(gw, None, headers={"x-api-key": "sk-wrong-key"}), 401)


def test_request_id_echo(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, _ = seeded
    inbound = "req-42.abc:XYZ_" + "a" * 10
    response = chat(gw, headers={"x-request-id": inbound})
    assert response.status == 200
    assert response.headers["x-aisix-request-id"] == inbound
    assert fake_openai.model_requests()[-1].headers["x-aisix-request-id"] == inbound

    for bad in ("has space", "x" * 129, "semi;colon", "slash/no", "q?x"):
        response = chat(gw, headers={"x-request-id": bad})
        assert response.status == 200
        generated = response.headers["x-aisix-request-id"]
        assert generated != bad
        assert uuid.UUID(generated).version == 4
    longest = "y" * 128
    assert chat(gw, headers={"x-request-id": longest}).headers["x-aisix-request-id"] == longest
    # also on errors
    refused = chat(gw, "sk-wrong-key", headers={"x-request-id": inbound})
    assert refused.status == 401
    assert refused.headers["x-aisix-request-id"] == inbound


# ---------------------------------------------------------------------------------------------
# rotation and persistence
# ---------------------------------------------------------------------------------------------


def test_rotate_without_grace(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    assert chat(gw).status == 200
    response = gw.admin("POST", f"/apikeys/{seed.api_key_id}/rotate")
    assert response.status == 200, response.text
    plaintext = response.json["plaintext"]
    assert re.fullmatch(r"sk-[0-9a-f]{32}", plaintext)
    entry = response.json["entry"]
    assert entry["id"] == seed.api_key_id
    assert entry["revision"] == 2
    assert entry["value"]["key_hash"] == sha256_hex(plaintext)
    assert entry["value"]["allowed_models"] == [ALIAS]
    assert "previous_key_hash" not in entry["value"]

    wait_status(gw, CALLER_KEY, 401, timeout=1.0)
    wait_status(gw, plaintext, 200, timeout=1.0)
    stored = gw.admin("GET", f"/apikeys/{seed.api_key_id}")
    assert stored.json["value"]["key_hash"] == sha256_hex(plaintext)
    assert plaintext not in stored.text

    assert gw.admin("POST", f"/apikeys/{uuid.uuid4()}/rotate").status == 404


def test_rotate_with_grace(seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream) -> None:
    gw, seed = seeded
    grace = 2
    response = gw.admin("POST", f"/apikeys/{seed.api_key_id}/rotate", {"grace_seconds": grace})
    rotated_at = time.time()
    assert response.status == 200, response.text
    plaintext = response.json["plaintext"]
    value = response.json["entry"]["value"]
    assert value["key_hash"] == sha256_hex(plaintext)
    assert value["previous_key_hash"] == sha256_hex(CALLER_KEY)
    expires = datetime.fromisoformat(value["previous_key_expires_at"])
    expires_ts = expires.astimezone(UTC).timestamp()
    assert rotated_at - 1.5 <= expires_ts <= rotated_at + grace + 1.5

    wait_status(gw, plaintext, 200, timeout=1.0)
    if time.time() < expires_ts - 0.3:
        assert chat(gw, CALLER_KEY).status == 200  # the old key works during the grace period
    wait_status(gw, CALLER_KEY, 401, timeout=max(0.0, expires_ts - time.time()) + 1.5)
    assert chat(gw, plaintext).status == 200


def test_resources_survive_restart(
    seeded: tuple[Gateway, Seed], fake_openai: FakeOpenAIUpstream
) -> None:
    gw, seed = seeded
    before = {
        kind: gw.admin("GET", f"/{kind}").json for kind in ("provider_keys", "models", "apikeys")
    }
    gw.restart()
    for kind, listing in before.items():
        after = gw.admin("GET", f"/{kind}")
        assert after.status == 200
        assert after.json == listing, kind
    provider_key = gw.admin("GET", f"/provider_keys/{seed.provider_key_id}").json
    assert provider_key["value"]["secret"] == "***"
    model = gw.admin("GET", f"/models/{seed.model_id}").json
    assert model["value"]["display_name"] == ALIAS
    key = gw.admin("GET", f"/apikeys/{seed.api_key_id}").json
    assert key["value"]["key_hash"] == sha256_hex(CALLER_KEY)

    completion = gw.openai_client().chat.completions.create(model=ALIAS, messages=MESSAGES)
    assert completion.model == ALIAS
    assert fake_openai.model_requests()[-1].headers["authorization"] == f"Bearer {PROVIDER_SECRET}"


def test_gateway_factory_overrides(gateway: GatewayFactory) -> None:
    gw = gateway({"observability": {"access_log": False}})
    assert gw.config["observability"]["access_log"] is False
    assert gw.admin("GET", "/provider_keys").json == {"list": [], "total": 0}
    assert gw.admin("GET", "/provider_keys", key="wrong").status == 401
    assert gw.status("/status/ready").status == 200
