"""What the usage ledger stores, as plain rows shared by every backend.

`build_batch` turns finished requests and settled spend into one `Batch`: hourly aggregates
per (hour, api key, serving model, team, provider key) with a latency histogram, one row per
request, spend deltas, and audit entries. A batch has an id, so a backend can apply it exactly
once even when it is replayed from the spill file; `to_line`/`from_line` are that file's
JSON-lines form. `latency_quantile` reads a percentile back from summed histograms.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from aisix.events import RequestFinished
from aisix.limits.layers import nano_usd
from aisix.limits.windows import HOUR

#: the most one request may add to the ledger (tokens, cost): beyond these a row saturates
MAX_ROW_TOKENS = 10**12
MAX_ROW_NANO_USD = 2**53 - 1

#: upper bounds (ms, inclusive) of the latency histogram buckets; one overflow bucket follows
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    *(1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000),
    *(1500, 2000, 3000, 5000, 7500, 10_000, 20_000, 30_000, 60_000, 120_000),
)
HIST_COLUMNS: tuple[str, ...] = tuple(f"lat_{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1))
#: the dimensions of an hourly aggregate, in key order
DIMENSIONS = ("api_key_id", "model_id", "team_id", "provider_key_id")
HOURLY_SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_nano_usd",
)
HOURLY_COLUMNS = ("hour", *DIMENSIONS, *HOURLY_SUMS, *HIST_COLUMNS)
#: the same sums per hour over every dimension (the unfiltered series read only these)
TOTALS_COLUMNS = ("hour", *HOURLY_SUMS, *HIST_COLUMNS)
#: the sums per UTC day and dimensions, without histograms (ranked and grouped reads)
DAILY_COLUMNS = ("day", *DIMENSIONS, *HOURLY_SUMS)
DAY = 86_400
REQUEST_COLUMNS = (
    "ts_ms",
    "event_id",
    *DIMENSIONS,
    "status",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_nano_usd",
    "latency_ms",
    "lat_bucket",
)
AUDIT_COLUMNS = ("id", "at_ms", "actor", "action", "kind", "resource_id", "diff")


def latency_bucket(latency_ms: float) -> int:
    return bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def latency_quantile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated inside its bucket; None if empty."""
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            low = LATENCY_BOUNDS_MS[i - 1] if i else 0.0
            high = LATENCY_BOUNDS_MS[i]
            return round(low + (high - low) * max(rank - seen, 0) / count, 3)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


@dataclass(slots=True)
class AuditRow:
    """One admin write; `diff` is already masked."""

    id: str
    at_ms: int
    actor: str
    action: str
    kind: str
    resource_id: str
    diff: dict[str, dict[str, Any]]

    def values(self) -> tuple[Any, ...]:
        diff = orjson.dumps(self.diff).decode()
        return (self.id, self.at_ms, self.actor, self.action, self.kind, self.resource_id, diff)


@dataclass(slots=True)
class Batch:
    """One write: applied whole or not at all, once (by `batch_id`)."""

    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    hourly: list[tuple[Any, ...]] = field(default_factory=list)
    totals: list[tuple[Any, ...]] = field(default_factory=list)
    daily: list[tuple[Any, ...]] = field(default_factory=list)
    requests: list[tuple[Any, ...]] = field(default_factory=list)
    spend: list[tuple[str, int, int]] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    #: finished requests the batch counts (also when per-request rows are not kept)
    event_count: int = 0

    @property
    def empty(self) -> bool:
        return not (self.hourly or self.requests or self.spend or self.audit)

    @property
    def events(self) -> int:
        return self.event_count

    def to_line(self) -> bytes:
        body = {
            "batch_id": self.batch_id,
            "events": self.event_count,
            "hourly": self.hourly,
            "totals": self.totals,
            "daily": self.daily,
            "requests": self.requests,
            "spend": self.spend,
            "audit": [a.values() for a in self.audit],
        }
        return orjson.dumps(body) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Batch:
        """Parse one spill line; raise ValueError when it is not one."""
        try:
            raw = orjson.loads(line)
            audit = [
                AuditRow(a[0], int(a[1]), a[2], a[3], a[4], a[5], orjson.loads(a[6]))
                for a in raw["audit"]
            ]
            return cls(
                batch_id=str(raw["batch_id"]),
                hourly=[tuple(r) for r in raw["hourly"]],
                totals=[tuple(r) for r in raw["totals"]],
                daily=[tuple(r) for r in raw["daily"]],
                requests=[tuple(r) for r in raw["requests"]],
                spend=[(str(k), int(s), int(n)) for k, s, n in raw["spend"]],
                audit=audit,
                event_count=int(raw["events"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"not a spilled batch: {exc}") from None


def build_batch(
    events: list[RequestFinished], spend: dict[tuple[str, int], int], keep_requests: bool = True
) -> Batch:
    """Aggregate events per hourly slot (sorted, so concurrent writers lock rows in the same
    order) and list one row per request (unless `keep_requests` is off)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    requests: list[tuple[Any, ...]] = []
    width = len(HOURLY_SUMS) + len(HIST_COLUMNS)
    for ev in events:
        dims = (ev.api_key_id or "", ev.model_id or "", ev.team_id or "", ev.provider_key_id or "")
        usage = ev.usage
        # untrusted numbers saturate: sums over years of rows stay inside 64-bit integers
        prompt = min(usage.prompt_tokens, MAX_ROW_TOKENS) if usage else 0
        completion = min(usage.completion_tokens, MAX_ROW_TOKENS) if usage else 0
        total = min(usage.total_tokens, MAX_ROW_TOKENS) if usage else 0
        nano = nano_usd(ev.cost_usd, cap=MAX_ROW_NANO_USD)
        error = 0 if ev.outcome == "success" else 1
        bucket = latency_bucket(ev.latency_ms)
        row = sums.setdefault((math.floor(ev.ts / HOUR) * HOUR, *dims), [0] * width)
        row[0] += 1
        row[1] += error
        row[2] += prompt
        row[3] += completion
        row[4] += total
        row[5] += nano
        row[len(HOURLY_SUMS) + bucket] += 1
        requests.append(
            (
                round(ev.ts * 1000),
                ev.event_id,
                *dims,
                ev.status,
                error,
                prompt,
                completion,
                total,
                nano,
                float(ev.latency_ms),
                bucket,
            )
        )
    hourly = [(*slot, *sums[slot]) for slot in sorted(sums)]
    per_hour: dict[int, list[int]] = {}
    for slot, counts in sums.items():
        hour_sums = per_hour.setdefault(slot[0], [0] * width)
        for i, value in enumerate(counts):
            hour_sums[i] += value
    totals = [(hour, *per_hour[hour]) for hour in sorted(per_hour)]
    per_day: dict[tuple[Any, ...], list[int]] = {}
    for slot, counts in sums.items():
        day_sums = per_day.setdefault((slot[0] - slot[0] % DAY, *slot[1:]), [0] * len(HOURLY_SUMS))
        for i in range(len(HOURLY_SUMS)):
            day_sums[i] += counts[i]
    daily = [(*slot, *per_day[slot]) for slot in sorted(per_day)]
    spent = sorted((k, s, n) for (k, s), n in spend.items())
    return Batch(
        hourly=hourly,
        totals=totals,
        daily=daily,
        requests=requests if keep_requests else [],
        spend=spent,
        event_count=len(events),
    )
