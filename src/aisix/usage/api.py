"""The admin usage reads as (status, JSON) pairs, aggregated in SQL on any ledger backend.

`apikey_usage` and `usage` are contract §10.4 (`usage` also groups by `provider_key`);
`timeseries` answers per-minute (from per-request rows), hourly or daily points over a range,
every bucket present (zeros where there was no traffic), with p50/p95 latency read from the
summed histograms; `top` ranks keys, models, teams or provider keys by cost, requests or
tokens. Bad parameters answer 400 `{"error_msg"}`, an unreachable usage database 503.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aisix.limits.base import NANO_PER_USD
from aisix.limits.governor import Governor
from aisix.limits.windows import HOUR, MONTH, PERIODS, Clock, bounds
from aisix.resources import format_rfc3339, parse_rfc3339
from aisix.snapshot import Snapshot
from aisix.usage.base import LedgerUnavailable, UsageLedger
from aisix.usage.rows import DAY, HIST_COLUMNS, latency_quantile

Answer = tuple[int, dict[str, Any]]
_SUMS = (
    "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(total_tokens), SUM(cost_nano_usd)"
)
GROUP_COLUMNS = {
    "api_key": "api_key_id",
    "model": "model_id",
    "team": "team_id",
    "provider_key": "provider_key_id",
}
TOP_METRICS = {"cost_usd": "cost_nano_usd", "requests": "requests", "total_tokens": "total_tokens"}
BUCKETS = {"minute": 60, "hour": HOUR, "day": 86_400}
#: the default range of a series ends now and spans this much
DEFAULT_SPANS = {"minute": HOUR, "hour": 86_400, "day": 30 * 86_400}
MAX_POINTS = 2000
MAX_TOP = 1000
SERIES_FILTERS = ("api_key_id", "model_id", "team_id", "provider_key_id")


class BadQuery(ValueError):
    """A query parameter is invalid; the message is the 400 `error_msg`."""


class UsageApi:
    """The usage read endpoints over one ledger."""

    def __init__(self, store: UsageLedger, governor: Governor | None, clock: Clock = time.time):
        self._store = store
        self._governor = governor
        self._clock = clock

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._store.query(sql, params)

    async def apikey_usage(self, key_id: str, query: dict[str, str], snap: Snapshot) -> Answer:
        key = snap.api_keys.get(key_id)
        if key is None:
            return 404, {"error_msg": "resource not found"}
        budget = key.value.budget
        default_from = bounds(PERIODS[budget.period] if budget else MONTH, self._clock())[0]

        async def run() -> Answer:
            start, end = _time_range(query, default_from, self._clock(), HOUR)
            sql, params = ranged_sums(start, end, "api_key_id = ?", (key_id,))
            rows = await self._rows(sql, params)
            state = None
            if self._governor is not None:
                state = await self._governor.budget_state(snap, key)
            return 200, {
                "api_key_id": key_id,
                "from": format_rfc3339(start),
                "to": format_rfc3339(end),
                **_totals(rows[0] if rows else ()),
                "budget": state,
            }

        return await _answer(run)

    async def usage(self, query: dict[str, str], snap: Snapshot) -> Answer:
        async def run() -> Answer:
            group_by = query.get("group_by", "api_key")
            column = GROUP_COLUMNS.get(group_by)
            if column is None:
                raise BadQuery(f"group_by must be one of {', '.join(GROUP_COLUMNS)}")
            start, end = self._month_range(query)
            found = await self._rows(*ranged_sums(start, end, group_by=column))
            rows = []
            for value, *sums in found:
                row: dict[str, Any] = {"key": value or None}
                if group_by != "team":
                    row["display_name"] = display_name(snap, group_by, value)
                rows.append({**row, **_totals(tuple(sums))})
            rows.sort(key=lambda r: (-r["cost_usd"], r["key"] or ""))
            return 200, {
                "group_by": group_by,
                "from": format_rfc3339(start),
                "to": format_rfc3339(end),
                "rows": rows,
            }

        return await _answer(run)

    async def top(self, query: dict[str, str], snap: Snapshot) -> Answer:
        async def run() -> Answer:
            by = query.get("by", "api_key")
            column = GROUP_COLUMNS.get(by)
            if column is None:
                raise BadQuery(f"by must be one of {', '.join(GROUP_COLUMNS)}")
            metric = query.get("metric", "cost_usd")
            order = TOP_METRICS.get(metric)
            if order is None:
                raise BadQuery(f"metric must be one of {', '.join(TOP_METRICS)}")
            limit = int_param(query, "limit", 10, 1, MAX_TOP)
            start, end = self._month_range(query)
            sql, params = ranged_sums(start, end, group_by=column)
            found = await self._rows(
                f"{sql} ORDER BY SUM({order}) DESC, {column} LIMIT ?", (*params, limit)
            )
            rows = [
                {
                    "key": value or None,
                    "display_name": display_name(snap, by, value),
                    **_totals(tuple(sums)),
                    "errors": int(sums[5] or 0),
                }
                for value, *sums in found
            ]
            return 200, {
                "by": by,
                "metric": metric,
                "from": format_rfc3339(start),
                "to": format_rfc3339(end),
                "rows": rows,
            }

        return await _answer(run)

    async def timeseries(self, query: dict[str, str]) -> Answer:
        async def run() -> Answer:
            bucket = query.get("bucket", "hour")
            step = BUCKETS.get(bucket)
            if step is None:
                raise BadQuery(f"bucket must be one of {', '.join(BUCKETS)}")
            now = self._clock()
            end_default = now
            if "to" in query:
                end_default = _parse_time(query, "to")
            start, end = _time_range(query, end_default - DEFAULT_SPANS[bucket], now, step)
            count = (end - start) // step
            if count > MAX_POINTS:
                raise BadQuery(
                    f"{count} points requested; at most {MAX_POINTS} per series "
                    "(use a larger bucket or a shorter range)"
                )
            where, params = _filters(query)
            if bucket == "minute":
                found = await self._rows(
                    _MINUTE_SERIES.format(where=where), (*params_ms(start, end), *params)
                )
                by_ts = {int(row[0]) // 1000: row[1:] for row in found}
            else:
                table = "usage_hourly" if where else "usage_hourly_all"  # one row an hour
                sql = _HOURLY_SERIES.format(step=step, where=where, table=table)
                found = await self._rows(sql, (start, end, *params))
                by_ts = {int(row[0]): row[1:] for row in found}
            points = [_point(ts, by_ts.get(ts)) for ts in range(start, end, step)]
            return 200, {
                "bucket": bucket,
                "from": format_rfc3339(start),
                "to": format_rfc3339(end),
                "points": points,
            }

        return await _answer(run)

    def _month_range(self, query: dict[str, str]) -> tuple[int, int]:
        now = self._clock()
        return _time_range(query, bounds(MONTH, now)[0], now, HOUR)


def ranged_sums(
    start: int,
    end: int,
    where: str = "",
    params: tuple[Any, ...] = (),
    group_by: str | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """SQL summing `[start, end)` (hour-aligned): whole UTC days from `usage_daily`, the hours
    before the first and after the last whole day from `usage_hourly`. Selects
    `[group_by,] requests, prompt, completion, total, cost_nano, errors`."""
    first_day = math.ceil(start / DAY) * DAY
    last_day = math.floor(end / DAY) * DAY
    lead = f"{group_by}, " if group_by else ""
    values = (
        f"{lead}requests, prompt_tokens, completion_tokens, total_tokens, cost_nano_usd, errors"
    )
    extra = f" AND {where}" if where else ""
    parts: list[str] = []
    args: list[Any] = []
    hour_spans = [(start, end)]
    if first_day < last_day:
        parts.append(f"SELECT {values} FROM usage_daily WHERE day >= ? AND day < ?{extra}")
        args += [first_day, last_day, *params]
        hour_spans = [(start, first_day), (last_day, end)]
    for low, high in hour_spans:
        if low < high:
            parts.append(f"SELECT {values} FROM usage_hourly WHERE hour >= ? AND hour < ?{extra}")
            args += [low, high, *params]
    grouped = f" GROUP BY {group_by}" if group_by else ""
    sql = f"SELECT {lead}{_SUMS}, SUM(errors) FROM ({' UNION ALL '.join(parts)}) AS spans{grouped}"
    return sql, tuple(args)


_HIST_SUMS = ", ".join(f"SUM({c})" for c in HIST_COLUMNS)
_HIST_FROM_ROWS = ", ".join(
    f"SUM(CASE WHEN lat_bucket = {i} THEN 1 ELSE 0 END)" for i in range(len(HIST_COLUMNS))
)
_MINUTE_SERIES = (
    "SELECT ts_ms - ts_ms % 60000 AS b, COUNT(*), SUM(error), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(total_tokens), SUM(cost_nano_usd), "
    f"{_HIST_FROM_ROWS} FROM usage_requests WHERE ts_ms >= ? AND ts_ms < ?{{where}} "
    "GROUP BY b"
)
_HOURLY_SERIES = (
    "SELECT hour - hour % {step} AS b, SUM(requests), SUM(errors), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(total_tokens), SUM(cost_nano_usd), "
    f"{_HIST_SUMS} FROM {{table}} WHERE hour >= ? AND hour < ?{{where}} GROUP BY b"
)


def params_ms(start: int, end: int) -> tuple[int, int]:
    return start * 1000, end * 1000


def _filters(query: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    names = [name for name in SERIES_FILTERS if name in query]
    return "".join(f" AND {name} = ?" for name in names), tuple(query[n] for n in names)


def _point(ts: int, row: tuple[Any, ...] | None) -> dict[str, Any]:
    values = [int(v or 0) for v in row] if row else [0] * (6 + len(HIST_COLUMNS))
    requests, errors, prompt, completion, total, nano = values[:6]
    hist = values[6:]
    return {
        "ts": format_rfc3339(ts),
        "requests": requests,
        "errors": errors,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cost_usd": nano / NANO_PER_USD,
        "latency_p50_ms": latency_quantile(hist, 0.5),
        "latency_p95_ms": latency_quantile(hist, 0.95),
    }


async def _answer(run: Any) -> Answer:
    try:
        answer: Answer = await run()
    except BadQuery as exc:
        return 400, {"error_msg": str(exc)}
    except LedgerUnavailable as exc:
        return 503, {"error_msg": str(exc)}
    return answer


def int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadQuery(f"{name} must be an integer between {low} and {high}")
    return int(raw)


def _parse_time(query: dict[str, str], name: str) -> float:
    try:
        return parse_rfc3339(query[name]).timestamp()
    except ValueError:
        raise BadQuery("from and to must be RFC 3339 timestamps") from None


def _time_range(
    query: dict[str, str], default_from: float, now: float, step: int
) -> tuple[int, int]:
    """`[from, to)` aligned to `step` (from down, to up, at least one step)."""
    start = _parse_time(query, "from") if "from" in query else default_from
    end = _parse_time(query, "to") if "to" in query else now
    if start > end:
        raise BadQuery("from must not be after to")
    first = math.floor(start / step) * step
    return first, max(math.ceil(end / step) * step, first + step)


def _totals(sums: tuple[Any, ...]) -> dict[str, Any]:
    requests, prompt, completion, total, nano = (int(v or 0) for v in (*sums, 0, 0, 0, 0, 0)[:5])
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cost_usd": nano / NANO_PER_USD,
    }


def display_name(snap: Snapshot, group_by: str, value: str) -> str | None:
    if group_by == "api_key":
        key = snap.api_keys.get(value)
        return key.value.display_name if key is not None else None
    if group_by == "provider_key":
        provider_key = snap.provider_keys.get(value)
        return provider_key.value.display_name if provider_key is not None else None
    if group_by == "model":
        model = snap.models_by_id.get(value)
        return model.alias if model is not None else None
    return None
