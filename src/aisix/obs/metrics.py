"""Prometheus metrics (contract §12.1), fed by `RequestFinished` events and runtime hooks.

Label values come from configuration (aliases, provider labels, route templates) or from a
closed set, never from client strings. Series live in lock-free families (`aisix.obs.prom`),
so the per-request cost is a dict hit and an addition per series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from aisix.events import RequestFinished
from aisix.obs.prom import Family, FamilyCollector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self._families: list[Family] = []
        c, h, g = self._counter, self._histogram, self._gauge
        self.requests = c(
            "aisix_requests_total",
            "Proxy requests",
            "endpoint", "model", "provider", "status", "outcome",
        )  # fmt: skip
        self.duration = h(
            "aisix_request_duration_seconds",
            "Proxy request duration",
            "endpoint",
            "model",
            "outcome",
        )
        self.llm_requests = c(
            "aisix_llm_requests_total",
            "Upstream attempts",
            "model", "provider", "status", "is_fallback",
        )  # fmt: skip
        self.llm_latency = h(
            "aisix_llm_api_latency_seconds", "Upstream attempt latency", "model", "provider"
        )
        self.ttft = h(
            "aisix_llm_time_to_first_token_seconds",
            "Time to first streamed chunk",
            "model", "provider",
        )  # fmt: skip
        self.input_tokens = c("aisix_llm_input_tokens_total", "Prompt tokens", "model", "provider")
        self.output_tokens = c(
            "aisix_llm_output_tokens_total", "Completion tokens", "model", "provider"
        )
        self.total_tokens = c("aisix_llm_total_tokens_total", "Total tokens", "model", "provider")
        self.consumed = c("aisix_tokens_consumed_total", "Tokens consumed", "model", "provider")
        self.spend = c("aisix_llm_spend_micro_usd_total", "Spend in micro-USD", "model", "provider")
        self.auth = c("aisix_auth_decisions_total", "Caller auth decisions", "result", "reason")
        self.ratelimit_rejections = c(
            "aisix_ratelimit_rejections_total", "Rate-limit refusals", "scope", "layer"
        )
        self.budget_rejections = c("aisix_budget_rejections_total", "Budget refusals", "scope")
        self.budget_warnings = c("aisix_budget_warnings_total", "Warn budgets crossed", "scope")
        self.in_flight = g("aisix_proxy_in_flight_requests", "Proxy requests in flight")
        self.in_flight.merge = "sum"
        self.body_limit = c(
            "aisix_proxy_request_body_limit_rejections_total", "Bodies over the limit"
        )
        self.cancelled = c(
            "aisix_proxy_client_cancelled_requests_total",
            "Requests the client abandoned",
            "endpoint",
        )
        self.deployment_state = g("aisix_deployment_state", "0 healthy, 1 cooldown", "model")
        self.cooled_down = c(
            "aisix_deployment_cooled_down_total", "Cooldowns entered", "model", "reason"
        )
        self.fallback_ok = c(
            "aisix_routing_successful_fallbacks_total", "Requests a fallback target served", "model"
        )
        self.fallback_failed = c(
            "aisix_routing_failed_fallbacks_total", "Requests whose fallbacks all failed", "model"
        )
        self.reloads = c("aisix_config_reloads_total", "Resource reloads", "result")
        self.applied_revision = g("aisix_config_applied_revision", "Snapshot revision")
        self.rejected = g("aisix_config_rejected_resources", "Rejected resources")
        self.last_reload_ok = g(
            "aisix_config_last_reload_successful", "1 if the last reload succeeded"
        )
        self.usage_emitted = c("aisix_usage_events_emitted_total", "Usage events emitted")
        self.usage_drops = c("aisix_usage_event_drops_total", "Usage events dropped")
        self.usage_rows_skipped = c(
            "aisix_usage_rows_skipped_total", "Usage ledger rows it could not write (skipped)"
        )
        self.redis_failures = c("aisix_redis_failures_total", "Redis failures", "operation")
        self.worker_scrape_failures = c(
            "aisix_metrics_worker_scrape_failures_total",
            "Proxy workers left out of a scrape (no answer in time)",
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = FamilyCollector(self._families)
        self.registry.register(self._collector)

    def _add(self, family: Family) -> Family:
        self._families.append(family)
        return family

    def _counter(self, name: str, doc: str, *labels: str) -> Family:
        return self._add(Family("counter", name, doc, labels))

    def _gauge(self, name: str, doc: str, *labels: str) -> Family:
        return self._add(Family("gauge", name, doc, labels))

    def _histogram(self, name: str, doc: str, *labels: str) -> Family:
        return self._add(Family("histogram", name, doc, labels, buckets=_LATENCY_BUCKETS))

    def bind_in_flight(self, read: Callable[[], float]) -> None:
        self.in_flight.set_function(read)

    def dump(self) -> dict[str, dict[tuple[str, ...], Any]]:
        """Every family's plain values, for the main process to merge (`render(others)`)."""
        return {family.name: family.snapshot() for family in self._families}

    def render(self, others: Sequence[dict[str, dict[tuple[str, ...], Any]]] = ()) -> bytes:
        """The text exposition; `others`: other worker processes' `dump()`s, merged in."""
        self._collector.others = others
        try:
            data: bytes = generate_latest(self.registry)
        finally:
            self._collector.others = ()
        return data

    # -- subscribers -----------------------------------------------------------------------

    def on_request(self, event: RequestFinished) -> None:
        model = event.requested_model or "unresolved"
        provider = event.provider or ""
        status = str(event.status)
        outcome = event.outcome
        self.requests.child(event.endpoint, model, provider, status, outcome).inc()
        self.duration.child(event.endpoint, model, outcome).observe(event.latency_ms / 1000)
        self._auth(event)
        if event.status == 413:
            self.body_limit.inc()
        if event.client_cancelled:
            self.cancelled.child(event.endpoint).inc()
        for attempt in event.attempt_log:
            self.llm_requests.child(
                attempt.served_model,
                attempt.provider,
                str(attempt.status),
                "true" if attempt.is_fallback else "false",
            ).inc()
            self.llm_latency.child(attempt.served_model, attempt.provider).observe(
                attempt.latency_s
            )
        self._served(event)
        self.usage_emitted.inc()

    def _auth(self, event: RequestFinished) -> None:
        if event.api_key_id is not None:
            self.auth.child("allowed", "ok").inc()
        elif event.status == 401:
            self.auth.child("denied", event.error_code or "invalid_api_key").inc()

    def _served(self, event: RequestFinished) -> None:
        served = event.served_model
        if served is None or event.outcome != "success":
            if event.is_fallback and event.requested_model:
                self.fallback_failed.child(event.requested_model).inc()
            return
        provider = event.provider or ""
        if event.is_fallback and event.requested_model:
            self.fallback_ok.child(event.requested_model).inc()
        if event.ttft_ms is not None:
            self.ttft.child(served, provider).observe(event.ttft_ms / 1000)
        usage = event.usage
        if usage is not None:
            self.input_tokens.child(served, provider).inc(usage.prompt_tokens)
            self.output_tokens.child(served, provider).inc(usage.completion_tokens)
            self.total_tokens.child(served, provider).inc(usage.total_tokens)
            self.consumed.child(served, provider).inc(usage.total_tokens)
        if event.cost_usd:
            self.spend.child(served, provider).inc(event.cost_usd * 1_000_000)

    def on_reload(self, successful: bool, revision: int | None, rejected: int | None) -> None:
        self.reloads.child("success" if successful else "failure").inc()
        self.last_reload_ok.set(1 if successful else 0)
        if revision is not None:
            self.applied_revision.set(revision)
        if rejected is not None:
            self.rejected.set(rejected)

    def on_cooldown(self, model: str, state: int, reason: str | None) -> None:
        self.deployment_state.child(model).set(state)
        if state == 1:
            self.cooled_down.child(model, reason or "unknown").inc()
