"""Caller authentication (contract §6.2) and inbound body checks (§6.4, §6.7, §6.10)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from aisix.errors import InvalidRequest, Unauthorized
from aisix.loader import build_snapshot
from aisix.proxy.auth import authenticate, bearer_token
from aisix.resources import parse_rfc3339
from aisix.snapshot import Record, Snapshot
from aisix.wire.request import client_wants_usage, parse_body

MISSING = "missing or malformed Authorization header"
NOW = parse_rfc3339("2026-01-05T10:00:00Z").timestamp()


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scope(*headers: tuple[str, str]) -> dict[str, Any]:
    return {"headers": [(n.lower().encode(), v.encode()) for n, v in headers]}


def snapshot_with(**keys: dict[str, Any]) -> Snapshot:
    records = [
        Record("api_keys", kid, {"allowed_models": ["*"], **value}, 1)
        for kid, value in keys.items()
    ]
    snap = build_snapshot(records, revision=1)
    assert snap.rejected == ()
    return snap


SNAP = snapshot_with(
    active={"key_hash": sha("sk-active")},
    off={"key_hash": sha("sk-off"), "disabled": True},
    old={"key_hash": sha("sk-old"), "expires_at": "2026-01-05T09:59:59Z"},
    later={"key_hash": sha("sk-later"), "expires_at": "2026-01-05T10:00:01Z"},
    rotated={
        "key_hash": sha("sk-new"),
        "previous_key_hash": sha("sk-prev"),
        "previous_key_expires_at": "2026-01-05T10:05:00Z",
    },
)


def auth_error(sc: dict[str, Any], now: float = NOW) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        authenticate(sc, SNAP, now)
    assert caught.value.status == 401
    assert caught.value.type == "invalid_api_key"
    return caught.value


# --- header parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["Bearer sk-active", "bearer sk-active", "BEARER sk-active", "Bearer   sk-active  "]
)
def test_bearer_scheme_case_insensitive_and_token_trimmed(value: str) -> None:
    assert bearer_token(scope(("authorization", value))) == "sk-active"
    assert authenticate(scope(("authorization", value)), SNAP, NOW).id == "active"


def test_x_api_key_used_without_authorization() -> None:
    assert authenticate(scope(("x-api-key", " sk-active ")), SNAP, NOW).id == "active"


def test_x_api_key_ignored_when_authorization_present() -> None:
    sc = scope(("authorization", "Basic abc"), ("x-api-key", "sk-active"))
    assert auth_error(sc).message == MISSING
    sc = scope(("x-api-key", "sk-active"), ("authorization", "Bearer sk-unknown"))
    assert auth_error(sc).message == "invalid API key"


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("authorization", "Bearer"),),
        (("authorization", "Bearer    "),),
        (("authorization", "Token sk-active"),),
        (("authorization", "sk-active"),),
        (("x-api-key", "   "),),
    ],
)
def test_malformed_or_missing_header_is_401(headers: tuple[tuple[str, str], ...]) -> None:
    err = auth_error(scope(*headers))
    assert err.message == MISSING
    assert err.code is None


# --- key lookup ----------------------------------------------------------------------------


def test_unknown_key() -> None:
    err = auth_error(scope(("authorization", "Bearer sk-nobody")))
    assert err.message == "invalid API key"
    assert err.code is None


def test_disabled_key() -> None:
    err = auth_error(scope(("authorization", "Bearer sk-off")))
    assert (err.message, err.code) == ("API key has been disabled", "api_key_disabled")


def test_expiry_checked_against_now() -> None:
    err = auth_error(scope(("authorization", "Bearer sk-old")))
    assert (err.message, err.code) == ("API key has expired", "api_key_expired")
    assert authenticate(scope(("authorization", "Bearer sk-later")), SNAP, NOW).id == "later"
    err = auth_error(scope(("authorization", "Bearer sk-later")), now=NOW + 2)
    assert err.code == "api_key_expired"


def test_previous_hash_works_only_within_grace_window() -> None:
    prev = scope(("authorization", "Bearer sk-prev"))
    assert authenticate(prev, SNAP, NOW).id == "rotated"
    assert authenticate(prev, SNAP, NOW + 299).id == "rotated"
    assert auth_error(prev, now=NOW + 301).message == "invalid API key"
    # the new plaintext is not bounded by the grace window
    assert authenticate(scope(("authorization", "Bearer sk-new")), SNAP, NOW + 10_000).id


def test_previous_hash_of_a_disabled_key_is_refused() -> None:
    snap = snapshot_with(
        k={
            "key_hash": sha("sk-new"),
            "disabled": True,
            "previous_key_hash": sha("sk-prev"),
            "previous_key_expires_at": "2026-01-05T10:05:00Z",
        }
    )
    with pytest.raises(Unauthorized) as caught:
        authenticate(scope(("authorization", "Bearer sk-prev")), snap, NOW)
    assert caught.value.code == "api_key_disabled"


# --- bodies --------------------------------------------------------------------------------

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body_error(body: Any, endpoint: Any = "chat") -> InvalidRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidRequest) as caught:
        parse_body(raw, endpoint)
    err = caught.value
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.message.startswith("request payload is invalid: ")
    return err


def test_valid_chat_body_is_returned_unchanged() -> None:
    body = {**CHAT, "temperature": 0.2, "unknown_field": [1]}
    assert parse_body(orjson.dumps(body), "chat") == body


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b"[1]", b'"text"'])
def test_not_a_json_object(raw: bytes) -> None:
    body_error(raw)


@pytest.mark.parametrize("model", [None, "", 5])
def test_model_required_string(model: Any) -> None:
    body = {k: v for k, v in CHAT.items() if k != "model"}
    if model is not None:
        body["model"] = model
    err = body_error(body)
    assert err.param == "model" and '"model"' in err.message


@pytest.mark.parametrize("messages", [None, [], "hi", {"role": "user"}])
def test_messages_must_be_non_empty_array(messages: Any) -> None:
    body = {"model": "m"} if messages is None else {"model": "m", "messages": messages}
    err = body_error(body)
    assert err.param == "messages" and '"messages"' in err.message


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant", "tool"])
def test_known_roles_accepted(role: str) -> None:
    parse_body(orjson.dumps({"model": "m", "messages": [{"role": role, "content": "x"}]}), "chat")


@pytest.mark.parametrize("message", [{"content": "x"}, {"role": "robot"}, {"role": 1}, "user"])
def test_bad_message_names_its_index(message: Any) -> None:
    err = body_error({"model": "m", "messages": [{"role": "user"}, message]})
    assert "messages[1]" in err.message


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_unhashable_role_is_a_400_not_a_crash(role: Any) -> None:
    err = body_error({"model": "m", "messages": [{"role": role, "content": "x"}]})
    assert "messages[0].role" in err.message


@pytest.mark.parametrize("content", ["text", None, [{"type": "text", "text": "x"}]])
def test_content_string_null_or_parts(content: Any) -> None:
    parse_body(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}), "chat"
    )


@pytest.mark.parametrize("content", [5, {"type": "text"}, True])
def test_bad_content_type_names_the_field(content: Any) -> None:
    err = body_error({"model": "m", "messages": [{"role": "user", "content": content}]})
    assert "messages[0].content" in err.message


@pytest.mark.parametrize("stream", ["true", 1, [], {}])
def test_stream_must_be_boolean(stream: Any) -> None:
    err = body_error({**CHAT, "stream": stream})
    assert err.param == "stream" and '"stream"' in err.message


def test_stream_options_must_be_object_and_include_usage_read() -> None:
    err = body_error({**CHAT, "stream": True, "stream_options": "yes"})
    assert err.param == "stream_options"
    assert client_wants_usage({**CHAT, "stream_options": {"include_usage": True}})
    assert not client_wants_usage({**CHAT, "stream_options": {"include_usage": "true"}})
    assert not client_wants_usage(CHAT)


def test_completions_need_prompt() -> None:
    assert parse_body(b'{"model": "m", "prompt": "hi"}', "completions")["prompt"] == "hi"
    err = body_error({"model": "m"}, "completions")
    assert err.param == "prompt" and '"prompt"' in err.message


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_embedding_input_shapes_accepted(value: Any) -> None:
    assert parse_body(orjson.dumps({"model": "m", "input": value}), "embeddings")["input"] == value


@pytest.mark.parametrize("value", [None, 5, [], ["a", 1], [[1], "a"], [[1, "x"]], {"a": 1}])
def test_embedding_input_shapes_refused(value: Any) -> None:
    body = {"model": "m"} if value is None else {"model": "m", "input": value}
    err = body_error(body, "embeddings")
    assert err.param == "input" and '"input"' in err.message


def test_embeddings_refuse_streaming() -> None:
    assert body_error({"model": "m", "input": "x", "stream": True}, "embeddings").param == "stream"
