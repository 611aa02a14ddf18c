"""Client IP resolution (`proxy.real_ip`) and the error envelopes and classification (§6.4)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aisix.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    UpstreamAuthError,
    UpstreamClientError,
    UpstreamRateLimited,
    UpstreamServerError,
    upstream_status_error,
)
from aisix.proxy.client_ip import ClientIPResolver
from aisix.settings import RealIP


def resolve(
    peer: str | None, xff: str | None = None, sent_as: str = "x-forwarded-for", **cfg: Any
) -> str | None:
    headers = [(sent_as.encode(), xff.encode())] if xff is not None else []
    scope = {"client": (peer, 5555) if peer else None, "headers": headers}
    return ClientIPResolver(RealIP(**cfg)).resolve(scope)


# --- client IP -----------------------------------------------------------------------------


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert resolve("10.0.0.5", "1.2.3.4") == "10.0.0.5"
    assert resolve(None, "1.2.3.4") is None


def test_untrusted_peer_header_is_ignored() -> None:
    assert resolve("8.8.8.8", "1.2.3.4", trusted_proxies=["10.0.0.0/8"]) == "8.8.8.8"


def test_trusted_peer_takes_last_hop() -> None:
    cfg: dict[str, Any] = {"trusted_proxies": ["10.0.0.0/8"]}
    assert resolve("10.0.0.5", "1.1.1.1, 2.2.2.2,  10.0.0.9 ", **cfg) == "10.0.0.9"
    assert resolve("10.0.0.5", None, **cfg) == "10.0.0.5"
    assert resolve("10.0.0.5", " , ", **cfg) == "10.0.0.5"


def test_single_ip_trusted_entry_and_custom_header() -> None:
    cfg: dict[str, Any] = {"trusted_proxies": ["192.168.1.1"], "header": "X-Real-IP"}
    assert resolve("192.168.1.1", "3.3.3.3", sent_as="x-real-ip", **cfg) == "3.3.3.3"
    assert resolve("192.168.1.2", "3.3.3.3", sent_as="x-real-ip", **cfg) == "192.168.1.2"


def test_recursive_walks_past_trusted_hops() -> None:
    cfg: dict[str, Any] = {"trusted_proxies": ["10.0.0.0/8", "172.16.0.1"], "recursive": True}
    assert resolve("10.0.0.5", "1.1.1.1, 2.2.2.2, 172.16.0.1, 10.1.1.1", **cfg) == "2.2.2.2"
    assert resolve("10.0.0.5", "1.1.1.1", **cfg) == "1.1.1.1"
    # every hop trusted: the leftmost is the best guess (nginx behaviour)
    assert resolve("10.0.0.5", "10.0.0.1, 10.0.0.2", **cfg) == "10.0.0.1"


def test_ipv6_peer_and_hops() -> None:
    cfg: dict[str, Any] = {"trusted_proxies": ["fd00::/8"], "recursive": True}
    assert resolve("fd00::1", "2001:db8::7, fd00::2", **cfg) == "2001:db8::7"


# --- envelopes -----------------------------------------------------------------------------


def test_openai_envelope_omits_empty_param_and_code() -> None:
    body = orjson.loads(InvalidRequest("request payload is invalid: x").openai_body())
    assert body == {
        "error": {"message": "request payload is invalid: x", "type": "invalid_request_error"}
    }
    full = orjson.loads(InvalidRequest("m", param="messages", code="c").openai_body())
    assert full["error"] == {
        "message": "m",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "c",
    }


def test_openai_envelope_carries_extra_fields() -> None:
    err = BudgetExceeded("budget exceeded", extra={"scope": "team", "limit_usd": 5})
    body = orjson.loads(err.openai_body())["error"]
    assert (body["type"], body["code"], body["scope"], body["limit_usd"]) == (
        "billing_error",
        "budget_exceeded",
        "team",
        5,
    )


@pytest.mark.parametrize(
    ("status", "anthropic_type"),
    [
        (400, "invalid_request_error"),
        (422, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (500, "api_error"),
        (501, "api_error"),
        (502, "api_error"),
    ],
)
def test_anthropic_type_by_status(status: int, anthropic_type: str) -> None:
    err = GatewayError("boom", status=status)
    assert orjson.loads(err.anthropic_body()) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "boom"},
    }


def test_anthropic_budget_refusal_is_billing_error() -> None:
    assert BudgetExceeded('budget exceeded for team "t"').anthropic_type() == "billing_error"


# --- upstream status classification --------------------------------------------------------

UPSTREAM_BODY = orjson.dumps(
    {
        "error": {
            "message": "secret-ish upstream detail",
            "code": "bad_thing",
            "param": "temperature",
        }
    }
)


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_becomes_502(status: int) -> None:
    err = upstream_status_error(status, UPSTREAM_BODY, None)
    assert isinstance(err, UpstreamAuthError)
    assert (err.status, err.type, err.code) == (502, "upstream_auth_error", None)
    assert err.message == f"upstream rejected the provider credentials ({status})"
    assert err.retryable is False and err.upstream_status == status
    assert err.reason == "upstream_auth_failure"


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_upstream_5xx_hides_the_body(status: int) -> None:
    err = upstream_status_error(status, UPSTREAM_BODY, 3.0)
    assert isinstance(err, UpstreamServerError)
    assert (err.status, err.type, err.code) == (502, "upstream_error", "upstream_server_error")
    assert err.message == f"upstream returned {status}"
    assert b"secret-ish" not in err.openai_body()
    assert err.retryable and err.upstream_status == status and err.retry_after == 3.0


def test_upstream_429_keeps_retry_after() -> None:
    err = upstream_status_error(429, UPSTREAM_BODY, 7.0)
    assert isinstance(err, UpstreamRateLimited)
    assert (err.status, err.type) == (429, "upstream_error")
    assert err.headers == {"Retry-After": "7"}
    assert err.retry_after == 7.0
    assert err.message == "secret-ish upstream detail"
    assert err.reason == "upstream_rate_limited"
    assert upstream_status_error(429, b"", None).headers == {}


@pytest.mark.parametrize("status", [400, 404, 408, 409, 422])
def test_upstream_other_4xx_keeps_message_code_param_and_status(status: int) -> None:
    err = upstream_status_error(status, UPSTREAM_BODY, None)
    assert isinstance(err, UpstreamClientError)
    assert (err.status, err.type, err.code, err.param) == (
        status,
        "upstream_error",
        "bad_thing",
        "temperature",
    )
    assert err.message == "secret-ish upstream detail"
    assert err.retryable is False
    assert err.headers == {}
    expected_reason = "upstream_request_timeout" if status == 408 else "upstream_status_failure"
    assert err.reason == expected_reason


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b"<html>bad gateway</html>", "upstream returned 400", None),
        (b'{"error": "plain words"}', "plain words", None),
        (b'{"error": {"message": "", "code": 42}}', "upstream returned 400", "42"),
        (b"[1, 2]", "upstream returned 400", None),
        (b"", "upstream returned 400", None),
    ],
)
def test_upstream_4xx_odd_bodies(body: bytes, message: str, code: str | None) -> None:
    err = upstream_status_error(400, body, None)
    assert (err.message, err.code, err.param) == (message, code, None)


@pytest.mark.parametrize(("retry_after", "sent"), [(0.0, "1"), (2.2, "3"), (30.0, "30")])
def test_upstream_429_retry_after_is_whole_seconds_at_least_one(
    retry_after: float, sent: str
) -> None:
    assert upstream_status_error(429, b"", retry_after).headers == {"Retry-After": sent}
