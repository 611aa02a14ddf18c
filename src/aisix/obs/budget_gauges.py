"""`aisix_budget_*{api_key_id,team_id,user_id}`: API key budgets, read at scrape time.

AISIX exposes each key budget's limit, spend, remainder and time to reset as gauges. aisix
reads them from the governor (`budget_state`, the same figures as the usage API) when
Prometheus scrapes, for at most `MAX_BUDGET_SERIES` keys, so nothing runs per request. A
counter backend that does not answer leaves the gauges out of that scrape.
"""

from __future__ import annotations

import logging
import time

from aisix.limits.governor import Governor
from aisix.resources import parse_rfc3339
from aisix.snapshot import Snapshot

log = logging.getLogger("aisix.metrics")
MAX_BUDGET_SERIES = 1000
BudgetRow = tuple[tuple[str, str, str], dict[str, float]]


async def budget_rows(snapshot: Snapshot, governor: Governor) -> list[BudgetRow] | None:
    """One row per key with a budget; None when the counter backend failed."""
    rows: list[BudgetRow] = []
    keys = [k for k in snapshot.api_keys.values() if k.value.budget is not None]
    for key in keys[:MAX_BUDGET_SERIES]:
        try:
            state = await governor.budget_state(snapshot, key)
        except Exception as exc:  # a counter backend outage must not break the scrape
            log.warning("budget gauges skipped: %s", exc)
            return None
        if state is None:
            continue
        resets = state.get("period_resets_at")
        reset_s = parse_rfc3339(resets).timestamp() - time.time() if resets else 0.0
        values = {
            "limit_usd": float(state["limit_usd"]),
            "spent_usd": float(state["spent_usd"]),
            "remaining_usd": float(state["remaining_usd"]),
            "reset_seconds": max(0.0, reset_s),
            "details_present": 1.0,
        }
        rows.append(((key.id, key.value.team_id or "", key.value.user_id or ""), values))
    return rows
