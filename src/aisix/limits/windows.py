"""UTC window and budget-period arithmetic shared by every counter backend (contract §9.2, §5.7).

A *window code* names a counting window: a positive number is a fixed window of that many
seconds aligned to the Unix epoch (`window_start = floor(now / W) × W`); `WEEK` is a 7-day
window starting Monday 00:00 UTC, `MONTH` a calendar month starting on the 1st 00:00 UTC, and
`TOTAL` a window that never ends. `bounds(code, now)` gives `(start, end)` in whole seconds
(`end == 0` for `TOTAL`). The Redis Lua scripts (`aisix.limits.lua`) implement the same rules
on the server clock; tests check both agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]

SECOND, MINUTE, HOUR, DAY = 1, 60, 3600, 86400
WEEK = -7
MONTH = -1
TOTAL = 0
#: 1970-01-05 (a Monday) — week windows are fixed 7-day windows offset by this much
WEEK_OFFSET = 4 * DAY

POLICY_WINDOWS = {"second": SECOND, "minute": MINUTE, "hour": HOUR, "day": DAY}
PERIODS = {"day": DAY, "week": WEEK, "month": MONTH, "total": TOTAL}


def bounds(code: int, now: float) -> tuple[int, int]:
    """The `(start, end)` of the window `code` containing `now`; end is 0 when it never ends."""
    cached = _spans.get(code)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[2]
    return _refresh(code, now)


def _compute(code: int, now: float) -> tuple[int, int]:
    if code > 0:
        start = math.floor(now / code) * code
        return start, start + code
    if code == WEEK:
        span = 7 * DAY
        start = math.floor((now - WEEK_OFFSET) / span) * span + WEEK_OFFSET
        return start, start + span
    if code == MONTH:
        moment = datetime.fromtimestamp(math.floor(now), UTC)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        return int(first.timestamp()), int(following.timestamp())
    return 0, 0


def _refresh(code: int, now: float) -> tuple[int, int]:
    """Compute the window containing `now` and cache it with the clock range it answers for.

    The range is `[start, hi)` where `hi` is the first clock value `_compute` puts in a later
    window: float division can round a moment a hair before `end` into the next window, and
    the cache must answer exactly as `_compute` does. Moments a hair before `start` that
    `_compute` rounds into this window just miss the cache and are computed again."""
    found = _compute(code, now)
    start, end = found
    if end == 0:
        _spans[code] = (-math.inf, math.inf, found)
        return found
    hi = float(end)
    while True:
        below = math.nextafter(hi, -math.inf)
        if below < start or _compute(code, below)[0] == start:
            break
        hi = below
    if start <= now < hi:
        _spans[code] = (float(start), hi, found)
    return found


#: per window code, the last window computed: (valid from, valid until, (start, end)). Nearly
#: every call asks for the current window, so `bounds` is one dict lookup and two compares.
_spans: dict[int, tuple[float, float, tuple[int, int]]] = {}


def seconds_until(end: int, now: float) -> int:
    """Whole seconds until `end`, at least 1 (the contract's Retry-After and reset rule)."""
    left = end - now
    whole = int(left)  # truncates toward zero, so ceil(left) is whole or whole + 1
    if whole < left:
        whole += 1
    return whole if whole > 1 else 1
