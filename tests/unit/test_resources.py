"""Field validation of resource values: messages name the field, defaults are materialised."""

from __future__ import annotations

from typing import Any

import pytest

from aisix.resources import (
    DEFAULT_STRIP_HEADERS,
    SECRET_MASK,
    ApiKey,
    DirectModel,
    ResourceInvalid,
    RoutingModel,
    format_rfc3339,
    parse_rfc3339,
    public_value,
    stored_value,
    validate_value,
)

HASH = "a" * 64


def invalid(kind: str, raw: Any) -> str:
    with pytest.raises(ResourceInvalid) as info:
        validate_value(kind, raw)
    return str(info.value)


def test_provider_key_defaults_are_materialised() -> None:
    value = validate_value("provider_keys", {"display_name": "pk", "secret": "s"})
    assert stored_value(value) == {
        "display_name": "pk",
        "secret": "s",
        "provider": "",
        "adapter": "openai",
        "strip_headers": DEFAULT_STRIP_HEADERS,
    }


def test_strip_headers_are_lowercased_and_deduplicated() -> None:
    raw = {"display_name": "pk", "secret": "s", "strip_headers": ["X-A", "x-a", "Cookie"]}
    assert stored_value(validate_value("provider_keys", raw))["strip_headers"] == ["x-a", "cookie"]


def test_unset_optional_fields_are_omitted_not_null() -> None:
    raw = {"key_hash": HASH, "allowed_models": ["m"]}
    assert stored_value(validate_value("api_keys", raw)) == raw


def test_api_key_is_another_name_for_secret() -> None:
    value = validate_value("provider_keys", {"display_name": "pk", "api_key": "s"})
    assert stored_value(value)["secret"] == "s"
    both = {"display_name": "pk", "api_key": "s", "secret": "t"}
    assert invalid("provider_keys", both) == 'only one of "secret" and "api_key" may be given'


def test_unknown_field_named_by_json_path() -> None:
    raw = {"display_name": "r", "routing": {"targets": [{"model": "a", "wieght": 2}]}}
    assert invalid("models", raw) == 'unknown field "routing.targets[0].wieght"'
    assert invalid("api_keys", {"key_hash": HASH, "allowed_models": [], "max_budget_usd": 1}) == (
        'unknown field "max_budget_usd"'
    )


def test_missing_field_named() -> None:
    assert invalid("api_keys", {"allowed_models": []}) == 'missing field "key_hash"'
    assert invalid("provider_keys", {"display_name": "pk"}) == 'missing field "secret"'


def test_strict_types_name_the_field() -> None:
    raw = {"display_name": "m", "provider": "openai", "model_name": "x", "provider_key_id": "p"}
    message = invalid("models", {**raw, "timeout": "30000"})
    assert message.startswith("timeout:")
    assert invalid("models", {**raw, "rate_limit": {"rpm": 0}}).startswith("rate_limit.rpm:")


def test_model_kinds_and_legacy_cost() -> None:
    raw = {"display_name": "m", "provider": "openai", "model_name": "x", "provider_key_id": "p"}
    direct = validate_value(
        "models", {**raw, "cost": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    )
    assert isinstance(direct, DirectModel)
    assert stored_value(direct)["pricing"] == {"input_per_million": 1.0, "output_per_million": 2.0}
    routing = validate_value(
        "models", {"display_name": "r", "routing": {"targets": [{"model": "m"}]}}
    )
    assert isinstance(routing, RoutingModel)
    assert routing.routing.targets[0].weight == 1
    assert "display_name" in invalid("models", {**raw, "display_name": "gpt-*"})
    assert invalid("models", {**raw, "provider": "Open AI"}).startswith("provider:")


def test_routing_alias_allows_only_its_fields() -> None:
    raw = {"display_name": "r", "routing": {"targets": [{"model": "m"}]}, "model_name": "x"}
    assert invalid("models", raw) == 'unknown field "model_name"'


def test_provider_key_rules() -> None:
    base = {"display_name": "pk", "secret": "s"}
    assert "api_base" in invalid("provider_keys", {**base, "adapter": "azure-openai"})
    assert "api_base" in invalid("provider_keys", {**base, "provider": "deepseek"})
    headers = {"request": {"default_headers": {"Authorization": "x"}}}
    assert "request.default_headers" in invalid("provider_keys", {**base, **headers})
    assert "adapter" in invalid("provider_keys", {**base, "adapter": "cohere"})


def test_validation_messages_never_echo_the_secret() -> None:
    secret = "sk-very-secret-value"
    for extra in ({"adapter": "bogus"}, {"provider": "x"}, {"nope": 1}):
        assert secret not in invalid(
            "provider_keys", {"display_name": "pk", "secret": secret, **extra}
        )


def test_api_key_rules() -> None:
    assert invalid("api_keys", {"key_hash": "ABC", "allowed_models": []}).startswith("key_hash:")
    pair = {"key_hash": HASH, "allowed_models": [], "previous_key_hash": "b" * 64}
    assert "set together" in invalid("api_keys", pair)
    bad_time = {"key_hash": HASH, "allowed_models": [], "expires_at": "tomorrow"}
    assert invalid("api_keys", bad_time).startswith("expires_at:")
    value = validate_value("api_keys", {"key_hash": HASH, "allowed_models": []})
    assert isinstance(value, ApiKey) and value.disabled is False


def test_policies_need_a_limit() -> None:
    raw = {"name": "p", "scope": "team", "scope_ref": "t", "window": "minute"}
    assert "at least one of max_requests, max_tokens" in invalid("rate_limit_policies", raw)
    budget = {"name": "b", "scope": "team", "scope_ref": "t", "limit_usd": 5, "period": "month"}
    assert stored_value(validate_value("budget_policies", budget))["limit_usd"] == 5


def test_body_must_be_an_object() -> None:
    assert invalid("models", [1, 2]) == "request body must be a JSON object"


def test_public_value_masks_secret() -> None:
    stored = {"display_name": "pk", "secret": "s"}
    assert public_value("provider_keys", stored)["secret"] == SECRET_MASK
    assert stored["secret"] == "s"


def test_rfc3339_round_trip() -> None:
    text = format_rfc3339(1767607230)
    assert text == "2026-01-05T10:00:30Z"
    assert parse_rfc3339(text).timestamp() == 1767607230
