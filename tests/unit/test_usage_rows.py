"""Pure parts of the usage ledger and the audit log: histogram quantiles, batch building and
its spill-line round trip, SQL placeholder numbering, and audit diffs with secrets masked."""

from __future__ import annotations

import uuid

import pytest

from aisix.admin.audit import fingerprint, value_diff
from aisix.events import RequestFinished, Usage
from aisix.usage.rows import (
    HIST_COLUMNS,
    LATENCY_BOUNDS_MS,
    AuditRow,
    Batch,
    build_batch,
    latency_bucket,
    latency_quantile,
)
from aisix.usage.schema import numbered


def finished(ts: float, latency_ms: float, outcome: str = "success") -> RequestFinished:
    return RequestFinished(
        event_id=str(uuid.uuid4()),
        request_id="r",
        ts=ts,
        endpoint="chat",
        method="POST",
        path="/v1/chat/completions",
        stream=False,
        status=200,
        outcome=outcome,
        latency_ms=latency_ms,
        client_ip=None,
        api_key_id="k",
        model_id="m",
        provider_key_id="pk",
        attempts=1,
        usage=Usage(3, 4, 0, 7),
        cost_usd=0.25,
    )


def test_latency_buckets_and_quantiles() -> None:
    assert latency_bucket(0.5) == 0 and latency_bucket(1) == 0 and latency_bucket(1.01) == 1
    assert latency_bucket(10**6) == len(LATENCY_BOUNDS_MS) == len(HIST_COLUMNS) - 1
    hist = [0] * len(HIST_COLUMNS)
    assert latency_quantile(hist, 0.5) is None
    hist[latency_bucket(150)] = 10  # ten requests in (100, 200]
    assert latency_quantile(hist, 0.5) == 150.0
    assert latency_quantile(hist, 1.0) == 200.0
    hist[-1] = 90  # the overflow bucket answers its lower bound
    assert latency_quantile(hist, 0.95) == LATENCY_BOUNDS_MS[-1]


def test_batch_aggregates_per_hour_day_and_overall_and_round_trips() -> None:
    base = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    events = [
        finished(base + 10, 40),
        finished(base + 20, 45, "upstream_error"),
        finished(base + 3700, 900),
    ]
    batch = build_batch(events, {("api_key:k", 0): 5, ("a", 1): 2})
    assert [row[:11] for row in batch.hourly] == [
        (base, "k", "m", "", "pk", 2, 1, 6, 8, 14, 500_000_000),
        (base + 3600, "k", "m", "", "pk", 1, 0, 3, 4, 7, 250_000_000),
    ]
    assert [row[:7] for row in batch.totals] == [
        (base, 2, 1, 6, 8, 14, 500_000_000),
        (base + 3600, 1, 0, 3, 4, 7, 250_000_000),
    ]
    assert batch.daily == [(base, "k", "m", "", "pk", 3, 1, 9, 12, 21, 750_000_000)]
    assert batch.spend == [("a", 1, 2), ("api_key:k", 0, 5)]  # key order: no deadlocks
    assert len(batch.requests) == 3 and batch.requests[1][7] == 1  # error flag
    batch.audit.append(AuditRow("id", 1, "fp", "create", "models", "m", {"x": {"before": 1}}))
    again = Batch.from_line(batch.to_line())
    assert again == batch
    with pytest.raises(ValueError, match="not a spilled batch"):
        Batch.from_line(b'{"batch_id": "x"}\n')


def test_numbered_placeholders() -> None:
    assert numbered("SELECT ? , ?") == "SELECT $1 , $2"
    assert numbered("SELECT 1") == "SELECT 1"


def test_value_diff_masks_secrets_and_lists_changed_paths() -> None:
    before = {"display_name": "p", "secret": "sk-old", "tls": {"verify": True}, "x": [1]}
    after = {"display_name": "p", "secret": "sk-new", "tls": {"verify": False}, "x": [1, 2]}
    assert value_diff("provider_keys", before, after) == {
        "secret": {"before": "***", "after": "***"},
        "tls.verify": {"before": True, "after": False},
        "x": {"before": [1], "after": [1, 2]},
    }
    assert value_diff("provider_keys", None, {"secret": "s"}) == {
        "secret": {"before": None, "after": "***"}
    }
    assert value_diff("models", {"a": 1}, {"a": 1}) == {}
    assert fingerprint(b"admin") == "8c6976e5b5410415"
