"""UTC window and period arithmetic (contract §9.2, §5.7)."""

from __future__ import annotations

from datetime import UTC, datetime

from aisix.limits.windows import (
    DAY,
    MINUTE,
    MONTH,
    SECOND,
    TOTAL,
    WEEK,
    bounds,
    seconds_until,
)
from aisix.resources import format_rfc3339 as rfc3339


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_fixed_windows_align_to_utc() -> None:
    assert bounds(MINUTE, ts("2026-01-05T10:00:59.999")) == (
        ts("2026-01-05T10:00"),
        ts("2026-01-05T10:01"),
    )
    assert bounds(MINUTE, ts("2026-01-05T10:01:00")) == (
        ts("2026-01-05T10:01"),
        ts("2026-01-05T10:02"),
    )
    assert bounds(SECOND, 100.5) == (100, 101)
    assert bounds(DAY, ts("2026-01-05T23:59:59")) == (
        ts("2026-01-05T00:00"),
        ts("2026-01-06T00:00"),
    )


def test_week_starts_monday_midnight() -> None:
    monday, next_monday = ts("2026-01-05T00:00"), ts("2026-01-12T00:00")
    assert datetime.fromtimestamp(monday, UTC).weekday() == 0
    for moment in ("2026-01-05T00:00", "2026-01-07T12:00", "2026-01-11T23:59:59"):
        assert bounds(WEEK, ts(moment)) == (monday, next_monday)
    assert bounds(WEEK, ts("2026-01-04T23:59:59"))[1] == monday  # Sunday belongs to last week
    assert bounds(WEEK, next_monday) == (next_monday, ts("2026-01-19T00:00"))


def test_month_starts_on_the_first() -> None:
    assert bounds(MONTH, ts("2024-02-29T23:59:59")) == (ts("2024-02-01"), ts("2024-03-01"))
    assert bounds(MONTH, ts("2024-03-01T00:00")) == (ts("2024-03-01"), ts("2024-04-01"))
    assert bounds(MONTH, ts("2025-12-31T23:00")) == (ts("2025-12-01"), ts("2026-01-01"))
    assert bounds(MONTH, ts("2026-01-01T00:00")) == (ts("2026-01-01"), ts("2026-02-01"))


def test_total_never_ends() -> None:
    assert bounds(TOTAL, ts("2026-01-05T10:00")) == (0, 0)


def test_reset_seconds_and_format() -> None:
    assert seconds_until(60, 59.99) == 1
    assert seconds_until(60, 60.0) == 1
    assert seconds_until(60, 47.2) == 13
    assert rfc3339(ts("2026-01-05T10:00:30.7")) == "2026-01-05T10:00:30Z"
