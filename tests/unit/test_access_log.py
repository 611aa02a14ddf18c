"""The JSON access log line (contract §12.2): exact field set, formats, and no secrets."""

from __future__ import annotations

import io
from typing import Any

import orjson

from aisix.events import AttemptFinished, RequestFinished, Usage
from aisix.obs.access_log import AccessLog, access_record
from aisix.resources import parse_rfc3339

COMMON = {
    "ts",
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "api_key_id",
    "model",
    "served_by",
    "provider",
    "upstream_model",
    "stream",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    # issue 3: every attempt (target, status, latency) and whether a fallback served it
    "is_fallback",
    "attempt_log",
}
CALLER_KEY = "sk-caller-0123456789abcdef"
PROVIDER_SECRET = "sk-proj-provider-secret"
ADMIN_KEY = "admin-key-very-secret"
PROMPT = "my confidential prompt text"


def event(**fields: Any) -> RequestFinished:
    base: dict[str, Any] = {
        "event_id": f"evt-{CALLER_KEY}",
        "request_id": "req-1",
        "ts": parse_rfc3339("2026-01-05T10:00:30.250Z").timestamp(),
        "endpoint": f"chat {PROMPT}",
        "method": "POST",
        "path": "/v1/chat/completions",
        "stream": False,
        "status": 200,
        "outcome": f"success {ADMIN_KEY}",
        "latency_ms": 12.3456,
        "client_ip": "203.0.113.9",
        "api_key_id": "key-1",
        "team_id": f"team {CALLER_KEY}",
        "user_id": f"user {ADMIN_KEY}",
        "requested_model": "chat-prod",
        "model_id": f"model {PROVIDER_SECRET}",
        "served_model": "gpt-4o-primary",
        "provider": "openai",
        "provider_key_id": PROVIDER_SECRET,
        "upstream_model": "gpt-4o",
        "attempts": 2,
        "is_fallback": True,
        "usage": Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8),
        "cost_usd": 0.00042,
        "budget_warnings": [PROMPT, CALLER_KEY],
        "attempt_log": [
            AttemptFinished("m1", "gpt-4o-primary", "openai", 502, 0.5, PROVIDER_SECRET, False),
            AttemptFinished("m2", "gpt-4o-secondary", "openai", 200, 0.2, None, True),
        ],
    }
    return RequestFinished(**{**base, **fields})


def test_success_has_exactly_the_documented_fields() -> None:
    record = access_record(event())
    assert set(record) == COMMON
    assert record["model"] == "chat-prod"
    assert record["served_by"] == "gpt-4o-primary"
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (
        5,
        3,
        8,
    )
    assert record["duration_ms"] == 12.346
    assert record["cost_usd"] == 0.00042
    assert record["stream"] is False and record["attempts"] == 2
    assert record["is_fallback"] is True
    assert [a["status"] for a in record["attempt_log"]] == [a.status for a in event().attempt_log]
    assert record["is_fallback"] is True
    assert [a["status"] for a in record["attempt_log"]] == [a.status for a in event().attempt_log]


def test_stream_adds_ttft_and_error_adds_type_and_code() -> None:
    plain = set(access_record(event()))
    streamed = access_record(event(stream=True, ttft_ms=3.21))
    assert set(streamed) - plain == {"ttft_ms"} and streamed["ttft_ms"] == 3.21
    failed = access_record(
        event(status=502, error_type="upstream_error", error_code="upstream_server_error")
    )
    assert set(failed) - plain == {"error_type", "error_code"}
    assert (failed["error_type"], failed["error_code"]) == (
        "upstream_error",
        "upstream_server_error",
    )


def test_request_refused_before_resolution_has_nulls() -> None:
    record = access_record(
        RequestFinished(
            event_id="e",
            request_id="r",
            ts=0.0,
            endpoint="chat",
            method="POST",
            path="/v1/chat/completions",
            stream=False,
            status=401,
            outcome="client_error",
            latency_ms=0.1,
            client_ip=None,
            error_type="invalid_api_key",
        )
    )
    assert record["api_key_id"] is None and record["model"] is None
    assert record["prompt_tokens"] is None
    assert record["error_type"] == "invalid_api_key" and record["error_code"] is None


def test_ts_is_rfc3339_utc() -> None:
    ts = access_record(event())["ts"]
    assert ts.endswith("Z")
    assert parse_rfc3339(ts).timestamp() == parse_rfc3339("2026-01-05T10:00:30.250Z").timestamp()


def test_line_never_contains_keys_secrets_or_prompts() -> None:
    line = orjson.dumps(access_record(event(stream=True, ttft_ms=1.0, error_type="x")))
    for secret in (CALLER_KEY, PROVIDER_SECRET, ADMIN_KEY, PROMPT):
        assert secret.encode() not in line


def test_access_log_writes_one_json_line_per_request() -> None:
    out = io.BytesIO()
    log = AccessLog(out)
    log.on_request(event())
    log.on_request(event(request_id="req-2"))
    lines = out.getvalue().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == ["req-1", "req-2"]
