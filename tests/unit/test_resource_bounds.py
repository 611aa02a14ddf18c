"""Issue 12 items 1 and 7: numeric bounds, control characters, api_base and secret formats.

Every value here was accepted before and broke traffic later (an overflow in a budget, a
500 on every request for a non-ASCII api_base, a CR/LF header); now each is a 400 naming
the field, and a secret never appears in the message.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aisix.resources import ResourceInvalid, validate_value

HASH = "a" * 64
PK = {"display_name": "pk", "secret": "sk-test-secret"}
MODEL = {"display_name": "m", "provider": "openai", "model_name": "x", "provider_key_id": "p"}


def invalid(kind: str, raw: Any) -> str:
    with pytest.raises(ResourceInvalid) as info:
        validate_value(kind, raw)
    return str(info.value)


@pytest.mark.parametrize("limit", [1e300, 1.8e299, 1e10, float("inf")])
def test_budget_limits_are_bounded(limit: float) -> None:
    policy = {"name": "b", "scope": "team", "scope_ref": "t", "period": "day", "limit_usd": limit}
    assert invalid("budget_policies", policy).startswith("limit_usd:")
    key = {"key_hash": HASH, "allowed_models": [], "budget": {"limit_usd": limit, "period": "day"}}
    assert invalid("api_keys", key).startswith("budget.limit_usd:")


def test_largest_budget_is_accepted() -> None:
    policy = {"name": "b", "scope": "team", "scope_ref": "t", "period": "day", "limit_usd": 1e9}
    validate_value("budget_policies", policy)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**MODEL, "timeout": 10**20}, "timeout"),
        ({**MODEL, "stream_timeout": 2**63}, "stream_timeout"),
        ({**MODEL, "retries": 10**6}, "retries"),
        ({**MODEL, "rate_limit": {"rpm": 10**30}}, "rate_limit.rpm"),
        ({**MODEL, "rate_limit": {"concurrency": 10**9}}, "rate_limit.concurrency"),
        ({**MODEL, "pricing": {"input_per_million": 1e300, "output_per_million": 1}}, "pricing"),
        ({**MODEL, "cooldown": {"max_seconds": 10**12}}, "cooldown.max_seconds"),
        (
            {"display_name": "r", "routing": {"targets": [{"model": "m", "weight": 10**12}]}},
            "routing.targets[0].weight",
        ),
        (
            {"display_name": "r", "routing": {"targets": [{"model": "m", "priority": -(10**12)}]}},
            "routing.targets[0].priority",
        ),
        (
            {"display_name": "r", "routing": {"targets": [{"model": "m"}], "retries": 10**9}},
            "routing.retries",
        ),
        (
            {
                "display_name": "r",
                "routing": {"targets": [{"model": "m"}], "retry_backoff_ms": 10**15},
            },
            "routing.retry_backoff_ms",
        ),
    ],
)
def test_model_numbers_are_bounded(raw: dict[str, Any], field: str) -> None:
    assert invalid("models", raw).startswith(field)


def test_policy_counts_are_bounded() -> None:
    raw = {"name": "p", "scope": "team", "scope_ref": "t", "window": "minute"}
    assert invalid("rate_limit_policies", {**raw, "max_requests": 10**40}).startswith(
        "max_requests:"
    )


@pytest.mark.parametrize("name", ["a\r\nb", "tab\there", "nul\x00", "del\x7f", "bell\x07"])
def test_names_refuse_control_characters(name: str) -> None:
    assert invalid("provider_keys", {**PK, "display_name": name}).startswith("display_name:")
    assert invalid("models", {**MODEL, "display_name": name}).startswith("display_name:")
    routing = {"display_name": name, "routing": {"targets": [{"model": "m"}]}}
    assert invalid("models", routing).startswith("display_name:")
    key = {"key_hash": HASH, "allowed_models": [], "display_name": name}
    assert invalid("api_keys", key).startswith("display_name:")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://example.com/",
        "http://exämple.com/v1",
        "http://example .com/v1",
        "http://example.com/v 1",
        "http:///v1",
        "example.com/v1",
        "http://example.com:99999/v1",
        "http://user:pw@example.com/v1",
        "http://example.com/v1\r\nX: y",
        "",
    ],
)
def test_api_base_must_be_an_absolute_http_url(url: str) -> None:
    assert invalid("provider_keys", {**PK, "api_base": url}).startswith("api_base:")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "https://api.openai.com/v1", "http://[::1]:9/v1"]
)
def test_good_api_bases_are_accepted(url: str) -> None:
    validate_value("provider_keys", {**PK, "api_base": url})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"x-a": "v\r\nInjected: 1"}, "request.default_headers"),
        ({"x-a": "v\n"}, "request.default_headers"),
        ({"x a": "v"}, "request.default_headers"),
        ({"x-a\r\n": "v"}, "request.default_headers"),
        ({"": "v"}, "request.default_headers"),
    ],
)
def test_default_headers_refuse_bad_names_and_values(headers: dict[str, str], message: str) -> None:
    assert invalid("provider_keys", {**PK, "request": {"default_headers": headers}}).startswith(
        message
    )


def test_strip_headers_must_be_header_names() -> None:
    assert invalid("provider_keys", {**PK, "strip_headers": ["x\r\ny"]}).startswith("strip_headers")


SECRET = "sk-very-secret-value-1234"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("adapter", "secret", "extra"),
    [
        ("openai", SECRET + "\r\nX-Injected: 1", {}),
        ("anthropic", SECRET + " with a space", {}),
        ("gemini", "\x00" + SECRET, {}),
        (
            "azure-openai",
            '{"tenant_id": "t", "client_id": "c"} ' + SECRET,
            {"api_base": "https://a"},
        ),
        (
            "azure-openai",
            orjson.dumps({"tenant_id": "t", "client_id": SECRET}).decode(),
            {"api_base": "https://a"},
        ),
        ("vertex", SECRET, {}),
        ("vertex", orjson.dumps({"project": "p", "access_token": SECRET}).decode(), {}),
        ("vertex", orjson.dumps({"project": "p", "region": "r", "x": SECRET}).decode(), {}),
        (
            "vertex",
            orjson.dumps({"project": "p", "region": "r", "service_account_json": SECRET}).decode(),
            {},
        ),
        ("bedrock", SECRET, {}),
        ("bedrock", orjson.dumps({"access_key_id": SECRET, "region": "r"}).decode(), {}),
        ("bedrock", orjson.dumps({"region": 5, "secret_access_key": SECRET}).decode(), {}),
    ],
)
def test_secret_formats_are_checked_and_never_echoed(
    adapter: str, secret: str, extra: dict[str, Any]
) -> None:
    message = invalid(
        "provider_keys", {"display_name": "pk", "adapter": adapter, "secret": secret, **extra}
    )
    assert message.startswith("secret:"), message
    assert SECRET not in message and "very-secret" not in message


@pytest.mark.parametrize(
    ("adapter", "secret"),
    [
        ("openai", SECRET),
        ("anthropic", "sk-ant-xyz"),
        ("gemini", "AIzaSyExample"),
        ("azure-openai", "0123456789abcdef"),
        ("azure-openai", '{"tenant_id": "t", "client_id": "c", "client_secret": "s"}'),
        (
            "azure-openai",
            '{"tenant_id": "t", "client_id": "c", "client_secret": "s", '
            '"token_url": "http://127.0.0.1:9/token"}',
        ),
        ("vertex", '{"project": "p", "region": "us-central1"}'),
        ("vertex", '{"project": "p", "region": "r", "access_token": "ya29.x"}'),
        (
            "vertex",
            orjson.dumps(
                {
                    "project": "p",
                    "region": "r",
                    "service_account_json": {
                        "type": "service_account",
                        "client_email": "sa@p.iam.gserviceaccount.com",
                        "private_key": PEM_KEY,
                    },
                }
            ).decode(),
        ),
        ("bedrock", '{"region": "us-east-1"}'),
        (
            "bedrock",
            '{"access_key_id": "AK", "secret_access_key": "s", "region": "us-east-1", '
            '"session_token": "t"}',
        ),
    ],
)
def test_documented_secret_formats_are_accepted(adapter: str, secret: str) -> None:
    extra = {"api_base": "https://x.openai.azure.com"} if adapter == "azure-openai" else {}
    validate_value(
        "provider_keys", {"display_name": "pk", "adapter": adapter, "secret": secret, **extra}
    )


def test_patterns_do_not_accept_a_trailing_newline() -> None:
    """`re.match` with `$` accepts "x\\n"; every pattern check is a full match."""
    assert invalid("api_keys", {"key_hash": HASH + "\n", "allowed_models": []}).startswith(
        "key_hash:"
    )
    assert invalid("models", {**MODEL, "provider": "openai\n"}).startswith("provider:")


def test_integral_json_numbers_are_integers_but_strings_and_fractions_are_not() -> None:
    """JSON Schema's `integer` includes 30000.0; the strict check still refuses "30000"."""
    value = validate_value("models", {**MODEL, "timeout": 30000.0})
    assert value.timeout == 30000 and type(value.timeout) is int  # type: ignore[union-attr]
    assert invalid("models", {**MODEL, "timeout": 30000.5}).startswith("timeout")
    assert invalid("models", {**MODEL, "timeout": "30000"}).startswith("timeout")
    assert invalid("models", {**MODEL, "timeout": True}).startswith("timeout")
