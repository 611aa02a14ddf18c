"""Per-process health of single-target models: cooldown, latency EWMA, in-flight attempts.

`HealthRegistry` is the only owner of this state (contract §8.5, §8.6). It lives in memory,
keyed by model id so it survives snapshot swaps, and is touched only from the event loop, so
it takes no locks. Cooldown deadlines are kept on the monotonic clock (expiry, Retry-After)
and on the wall clock (what `/status/models` shows). Expiry is lazy: a cooldown ends the first
time someone looks after its deadline (`in_cooldown`, `status`, `sweep`), which is also when
`on_change(entry, 0, None)` fires for metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from aisix.errors import GatewayError
from aisix.resources import Cooldown, format_rfc3339
from aisix.snapshot import ModelEntry

#: smoothing factor of the latency EWMA (contract §8.2)
EWMA_ALPHA = 0.3

_DEFAULT_COOLDOWN = Cooldown()
_TRANSPORT_REASONS = frozenset({"transport_error", "upstream_decode_error"})
#: a representative upstream status for status-class errors raised without `upstream_status`
_STATUS_OF_REASON = {
    "upstream_auth_failure": 401,
    "upstream_request_timeout": 408,
    "upstream_rate_limited": 429,
    "upstream_server_error": 500,
}

ChangeHook = Callable[[ModelEntry, int, str | None], None]


class _ModelHealth:
    """Mutable health of one model id; never shared outside the registry."""

    __slots__ = (
        "cool_until",
        "cool_until_wall",
        "entry",
        "error_at",
        "error_message",
        "error_status",
        "ewma",
        "in_flight",
        "latency_at",
        "reason",
    )

    def __init__(self, entry: ModelEntry | None) -> None:
        self.entry = entry
        self.cool_until = 0.0  # monotonic deadline; meaningful only while in `_cooling`
        self.cool_until_wall = 0.0
        self.reason: str | None = None
        self.in_flight = 0
        self.ewma: float | None = None
        self.latency_at = 0.0  # monotonic time of the last sample (or exploration probe)
        self.error_at: float | None = None
        self.error_status: int | None = None
        self.error_message = ""


class HealthRegistry:
    """Cooldown, latency and in-flight bookkeeping for every single-target model."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._states: dict[str, _ModelHealth] = {}
        #: models marked cooling (some may be past their deadline until looked at)
        self._cooling: dict[str, _ModelHealth] = {}
        #: metrics hook: (entry, 1, reason) on entering cooldown, (entry, 0, None) on leaving
        self.on_change: ChangeHook | None = None

    # --- cooldown reads (hot path) ----------------------------------------------------------

    def any_cooling(self) -> bool:
        """False when no model can be in cooldown: lets the router skip the filter step."""
        return bool(self._cooling)

    def in_cooldown(self, model_id: str) -> bool:
        if not self._cooling:
            return False
        state = self._cooling.get(model_id)
        if state is None:
            return False
        if self.clock() < state.cool_until:
            return True
        self._leave(model_id, state)
        return False

    def cooldown_until(self, model_id: str) -> float | None:
        """Wall-clock end of the model's cooldown, or None when it is not cooling."""
        if not self.in_cooldown(model_id):
            return None
        return self._cooling[model_id].cool_until_wall

    def cooldown_remaining(self, model_id: str) -> float | None:
        """Seconds until the model's cooldown ends, or None when it is not cooling."""
        if not self.in_cooldown(model_id):
            return None
        return self._cooling[model_id].cool_until - self.clock()

    def sweep(self) -> None:
        """End every cooldown past its deadline now (fires `on_change`); call before a scrape."""
        now = self.clock()
        for model_id, state in list(self._cooling.items()):
            if now >= state.cool_until:
                self._leave(model_id, state)

    # --- in-flight attempts -----------------------------------------------------------------

    def begin(self, model_id: str) -> None:
        state = self._states.get(model_id)
        if state is None:
            state = self._states[model_id] = _ModelHealth(None)
        state.in_flight += 1

    def end(self, model_id: str) -> None:
        state = self._states.get(model_id)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def in_flight(self, model_id: str) -> int:
        state = self._states.get(model_id)
        return 0 if state is None else state.in_flight

    # --- latency ----------------------------------------------------------------------------

    def latency_ewma(self, model_id: str) -> float | None:
        """Latency EWMA in seconds over successful attempts, None before the first sample."""
        state = self._states.get(model_id)
        return None if state is None else state.ewma

    def fresh_latency(self, model_id: str, max_age: float) -> float | None:
        """The EWMA if its last sample (or probe) is at most `max_age` seconds old, else None."""
        state = self._states.get(model_id)
        if state is None or state.ewma is None:
            return None
        if self.clock() - state.latency_at > max_age:
            return None
        return state.ewma

    def mark_probe(self, model_id: str) -> None:
        """Count a stale target as freshly sampled while one exploratory attempt is out."""
        state = self._states.get(model_id)
        if state is not None and state.ewma is not None:
            state.latency_at = self.clock()

    # --- outcomes ---------------------------------------------------------------------------

    def record_success(self, entry: ModelEntry, latency_s: float) -> None:
        """Fold a successful attempt into the EWMA and clear the model's cooldown."""
        state = self._state(entry)
        sample = max(latency_s, 0.0)
        previous = state.ewma
        state.ewma = (
            sample if previous is None else EWMA_ALPHA * sample + (1 - EWMA_ALPHA) * previous
        )
        state.latency_at = self.clock()
        if entry.id in self._cooling:
            self._leave(entry.id, state)

    def record_failure(self, entry: ModelEntry, error: GatewayError) -> None:
        """Record an upstream failure and start (or extend) a cooldown when §8.5 says so.

        Errors without a `reason` (limits, budgets, client errors raised before any upstream
        call) say nothing about the model's health and are ignored.
        """
        if error.reason is None:
            return
        state = self._state(entry)
        state.error_at = self.wall()
        state.error_status = error.upstream_status or error.status
        state.error_message = error.message
        config = _cooldown_config(entry)
        if config is None:
            return
        reason = trigger_reason(config, error)
        if reason is None:
            return
        length = cooldown_seconds(config, error.retry_after)
        if length <= 0:
            return
        until = self.clock() + length
        if entry.id in self._cooling and state.cool_until >= until:
            return  # a longer cooldown (e.g. a big Retry-After) is already running
        was_cooling = self.in_cooldown(entry.id)
        state.cool_until = until
        state.cool_until_wall = self.wall() + length
        state.reason = reason
        self._cooling[entry.id] = state
        if not was_cooling and self.on_change is not None:
            self.on_change(entry, 1, reason)

    # --- status (§8.6) ----------------------------------------------------------------------

    def status(self, models: Iterable[ModelEntry]) -> list[dict[str, Any]]:
        """The §8.6 status array, sorted by display_name. `cooldown_until` and `status_reason`
        appear only while a model cools; `last_error` and `latency_ewma_ms` once recorded."""
        self.sweep()
        out: list[dict[str, Any]] = []
        for entry in sorted(models, key=lambda m: m.alias):
            item: dict[str, Any] = {"id": entry.id, "display_name": entry.alias}
            if entry.is_routing:
                item["kind"] = "routing"
                item["status"] = "not_applicable"
                out.append(item)
                continue
            item["kind"] = "direct"
            state = self._states.get(entry.id)
            cooling = state is not None and entry.id in self._cooling
            item["status"] = "cooldown" if cooling else "healthy"
            if state is not None:
                if cooling:
                    item["cooldown_until"] = format_rfc3339(math.ceil(state.cool_until_wall))
                    item["status_reason"] = state.reason
                if state.error_at is not None:
                    item["last_error"] = {
                        "at": format_rfc3339(state.error_at),
                        "status": state.error_status,
                        "message": state.error_message,
                    }
                if state.ewma is not None:
                    item["latency_ewma_ms"] = round(state.ewma * 1000, 1)
            item["in_flight"] = 0 if state is None else state.in_flight
            out.append(item)
        return out

    def prune(self, live_ids: Collection[str]) -> None:
        """Forget models that no longer exist (call when a new snapshot is published)."""
        for model_id in [m for m in self._states if m not in live_ids]:
            state = self._states.pop(model_id)
            if self._cooling.pop(model_id, None) is not None and state.entry is not None:
                self._notify_leave(state.entry)

    # --- internals --------------------------------------------------------------------------

    def _state(self, entry: ModelEntry) -> _ModelHealth:
        state = self._states.get(entry.id)
        if state is None:
            state = self._states[entry.id] = _ModelHealth(entry)
        else:
            state.entry = entry
        return state

    def _leave(self, model_id: str, state: _ModelHealth) -> None:
        del self._cooling[model_id]
        state.reason = None
        if state.entry is not None:
            self._notify_leave(state.entry)

    def _notify_leave(self, entry: ModelEntry) -> None:
        if self.on_change is not None:
            self.on_change(entry, 0, None)


def _cooldown_config(entry: ModelEntry) -> Cooldown | None:
    """The model's cooldown settings, or None when cooldown is off for it."""
    value = entry.direct
    if value is None:
        return None
    config = value.cooldown or _DEFAULT_COOLDOWN
    if not config.enabled or config.default_seconds == 0:
        return None
    return config


def trigger_reason(config: Cooldown, error: GatewayError) -> str | None:
    """The `status_reason` if this error triggers a cooldown under `config`, else None."""
    status = error.upstream_status
    if status is None and error.reason is not None:
        status = _STATUS_OF_REASON.get(error.reason)
    if status is not None:
        return status_reason(status) if config.triggers_on(status) else None
    if error.reason == "request_timeout":
        return error.reason if config.trigger_on_timeout else None
    if error.reason in _TRANSPORT_REASONS:
        return error.reason if config.trigger_on_transport else None
    return None


def status_reason(status: int) -> str:
    """The §8.6 `status_reason` label for an upstream status that triggered a cooldown."""
    if status in (401, 403):
        return "upstream_auth_failure"
    if status == 408:
        return "upstream_request_timeout"
    if status == 429:
        return "upstream_rate_limited"
    if status >= 500:
        return "upstream_server_error"
    return "upstream_status_failure"


def cooldown_seconds(config: Cooldown, retry_after: float | None) -> float:
    """Cooldown length: a positive Retry-After (when honoured) capped at max_seconds, else
    default_seconds."""
    if config.honor_retry_after and retry_after is not None and retry_after > 0:
        return min(retry_after, float(config.max_seconds))
    return float(config.default_seconds)
