"""Prometheus metrics (contract §12.1, docs/metrics.md), fed by `RequestFinished` events and hooks.

Label values come from configuration (aliases, provider labels, resource ids and names, route
templates) or from a closed set, never from client strings. aisix's own series and AISIX's
(`aisix.obs.aisix_series` builds their label tuples, once per event) are both exposed, so an
AISIX Grafana dashboard works unchanged. Series live in lock-free families (`aisix.obs.prom`),
so the per-request cost is a dict hit and an addition per series.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from aisix import __version__
from aisix.events import AttemptFinished, RequestFinished
from aisix.obs.aisix_series import (
    DEPLOYMENT_LABELS,
    DURATION_LABELS,
    LATENCY_LABELS,
    REQUEST_LABELS,
    USAGE_LABELS,
    Labeller,
    status_class,
    target_of,
)
from aisix.obs.client_type import ClientTypeClassifier
from aisix.obs.prom import Family, FamilyCollector
from aisix.settings import MetricsSettings
from aisix.snapshot import ModelEntry, Snapshot, SnapshotHolder

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: AISIX's defaults for `observability.metrics.buckets.*`
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 420, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
BUDGET_GAUGES = ("limit_usd", "spent_usd", "remaining_usd", "reset_seconds", "details_present")


#: distinct `field` labels of aisix_translation_dropped_total before the rest count as "other"
MAX_DROP_LABELS = 64
_DROP_NAME = re.compile(r"^[a-z][a-z0-9_:.-]{0,47}$")


@dataclass(slots=True)
class _ServedSeries:
    """The usage series of one served-request label combination."""

    model: str
    ttft: Any
    request_ttft: Any
    input: Any
    output: Any
    total: Any
    consumed: Any
    spend: Any
    fallback: Any


@dataclass(slots=True)
class _RequestSeries:
    """Every series one request label combination updates."""

    labels: tuple[str, ...]
    requests: Any
    duration: Any
    proxy_requests: Any
    proxy_failed: Any
    proxy_duration: Any
    e2e: Any
    auth: Any
    served: _ServedSeries | None


@dataclass(slots=True)
class _AttemptSeries:
    requests: Any
    duration: Any
    latency: Any
    deployment: Any
    result: Any


class Metrics:
    def __init__(
        self,
        settings: MetricsSettings | None = None,
        holder: SnapshotHolder | None = None,
        env_id: str = "",
    ) -> None:
        settings = settings or MetricsSettings()
        self._families: list[Family] = []
        self._labeller = Labeller(holder)
        self._clients = ClientTypeClassifier(settings.client_type_rules)
        self._env_id = env_id
        self._by_request: dict[tuple[Any, ...], _RequestSeries] = {}
        self._by_attempt: dict[tuple[Any, ...], _AttemptSeries] = {}
        self._by_client: dict[tuple[str, str], tuple[Any, ...]] = {}
        buckets = settings.buckets
        e2e = tuple(buckets.request_e2e_latency or E2E_BUCKETS)
        ttft = tuple(buckets.request_ttft or TTFT_BUCKETS)
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
        self.proxy_requests = c("aisix_proxy_requests_total", "Proxy requests", *REQUEST_LABELS)
        self.proxy_failed = c(
            "aisix_proxy_failed_requests_total", "Proxy requests not served", *REQUEST_LABELS
        )
        self.proxy_duration = h(
            "aisix_proxy_request_duration_seconds", "Proxy request duration", *DURATION_LABELS
        )
        self.llm_requests = c(
            "aisix_llm_requests_total", "Upstream attempts (model: target)", *REQUEST_LABELS
        )
        self.llm_duration = h(
            "aisix_llm_request_duration_seconds", "Upstream attempt duration", *DURATION_LABELS
        )
        self.llm_latency = h(
            "aisix_llm_api_latency_seconds", "Upstream attempt latency", *USAGE_LABELS
        )
        self.ttft = h(
            "aisix_llm_time_to_first_token_seconds", "Time to first streamed chunk", *USAGE_LABELS
        )
        self.input_tokens = c("aisix_llm_input_tokens_total", "Prompt tokens", *USAGE_LABELS)
        self.output_tokens = c("aisix_llm_output_tokens_total", "Completion tokens", *USAGE_LABELS)
        self.total_tokens = c("aisix_llm_total_tokens_total", "Total tokens", *USAGE_LABELS)
        self.consumed = c("aisix_tokens_consumed_total", "Tokens consumed", "model", "provider")
        self.spend = c("aisix_llm_spend_micro_usd_total", "Spend in micro-USD", *USAGE_LABELS)
        self.tokens_by_client = c(
            "aisix_llm_tokens_by_client_total",
            "Tokens by calling client (User-Agent rules)",
            "client_type", "model", "token_type",
        )  # fmt: skip
        self.e2e = self._add(
            Family(
                "histogram",
                "aisix_request_e2e_latency_seconds",
                "End-to-end request latency",
                LATENCY_LABELS,
                buckets=e2e,
            )
        )
        self.request_ttft = self._add(
            Family(
                "histogram",
                "aisix_request_ttft_seconds",
                "Time to first token of streamed requests",
                LATENCY_LABELS,
                buckets=ttft,
            )
        )
        self.auth = c(
            "aisix_auth_decisions_total", "Caller auth decisions", "method", "result", "reason"
        )
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
            "endpoint", "model", "provider_key_id", "provider_key_name",
        )  # fmt: skip
        self.deployment_state = g(
            "aisix_deployment_state", "0 healthy, 1 cooldown", *DEPLOYMENT_LABELS
        )
        self.cooled_down = c(
            "aisix_deployment_cooled_down_total",
            "Cooldowns entered",
            *DEPLOYMENT_LABELS,
            "reason",
        )
        self.deployment_requests = c(
            "aisix_deployment_requests_total", "Attempts per deployment", *DEPLOYMENT_LABELS
        )
        self.deployment_ok = c(
            "aisix_deployment_success_responses_total", "Successful attempts", *DEPLOYMENT_LABELS
        )
        self.deployment_failed = c(
            "aisix_deployment_failure_responses_total", "Failed attempts", *DEPLOYMENT_LABELS
        )
        self.fallback_ok = c(
            "aisix_routing_successful_fallbacks_total",
            "Requests a fallback target served",
            "model", "fallback_model",
        )  # fmt: skip
        self.fallback_failed = c(
            "aisix_routing_failed_fallbacks_total",
            "Requests whose fallbacks all failed",
            "model", "fallback_model",
        )  # fmt: skip
        self.reloads = c("aisix_config_reloads_total", "Resource reloads", "result")
        self.reload_failures = c(
            "aisix_config_reload_failures_total", "Failed resource reloads", "reason"
        )
        self.applied_revision = g("aisix_config_applied_revision", "Snapshot revision")
        self.observed_revision = g("aisix_config_observed_revision", "Store revision last read")
        self.rejected = g("aisix_config_rejected_resources", "Rejected resources")
        self.partially_compatible = g(
            "aisix_config_partially_compatible_resources",
            "Resources applied without fields this version does not know",
            "kind",
        )
        self.stale_served = g(
            "aisix_config_stale_served_resources",
            "Rejected resources whose previous version keeps serving",
            "kind",
        )
        self.last_reload_ok = g(
            "aisix_config_last_reload_successful", "1 if the last reload succeeded"
        )
        self.last_success_ts = g(
            "aisix_config_last_reload_success_timestamp_seconds", "Time of the last good reload"
        )
        self.hash_info = g("aisix_config_hash_info", "Applied config hash (value 1)", "config_hash")
        self.source_connected = g(
            "aisix_config_source_connected", "1 while the resource store answers"
        )
        budget_labels = ("api_key_id", "team_id", "user_id")
        self.budget = {
            name: g(f"aisix_budget_{name}", f"API key budget {name}", *budget_labels)
            for name in BUDGET_GAUGES
        }
        self.build_info = g("aisix_build_info", "Version (value 1)", "version", "service_name")
        self.usage_emitted = c("aisix_usage_events_emitted_total", "Usage events emitted")
        self.usage_drops = c("aisix_usage_event_drops_total", "Usage events dropped")
        self._drop_names: set[str] = set()
        self.translation_dropped = c(
            "aisix_translation_dropped_total",
            "Request fields or blocks a translated attempt's target family could not express",
            "family",
            "field",
        )
        self.usage_spilled = c(
            "aisix_usage_spilled_total", "Usage events written to the spill file"
        )
        self.usage_replayed = c(
            "aisix_usage_replayed_total", "Spilled usage events replayed into the database"
        )
        self.media_units = c(
            "aisix_media_units_total",
            "Billable media units served (images, audio seconds, speech characters)",
            "endpoint",
            "model",
            "unit",
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
        if not family.labels and family.kind != "histogram":
            family.child()  # an unlabelled series exists (at 0) from the start
        return family

    def _counter(self, name: str, doc: str, *labels: str) -> Family:
        return self._add(Family("counter", name, doc, labels))

    def _gauge(self, name: str, doc: str, *labels: str) -> Family:
        return self._add(Family("gauge", name, doc, labels))

    def bind_config_source(self, connected: Callable[[], bool]) -> None:
        self.source_connected.set_function(lambda: 1.0 if connected() else 0.0)

    def set_service(self, service_name: str) -> None:
        self.build_info.child(__version__, service_name).set(1)

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
        """Count one finished request. The series it touches are found with one dict hit
        (`_request_series`, keyed by every event field a label comes from) instead of one
        per family; each attempt likewise (`_attempt_series`)."""
        key = (
            event.endpoint,
            event.requested_model,
            event.model_id,
            event.served_model,
            event.provider,
            event.upstream_model,
            event.provider_key_id,
            event.api_key_id,
            event.team_id,
            event.user_id,
            event.stream,
            event.is_fallback,
            event.status,
            event.outcome,
        )
        series = self._by_request.get(key)
        if series is None:
            series = self._by_request[key] = self._request_series(event)
        seconds = event.latency_ms / 1000
        series.requests.inc()
        series.duration.observe(seconds)
        series.proxy_requests.inc()
        if series.proxy_failed is not None:
            series.proxy_failed.inc()
        series.proxy_duration.observe(seconds)
        series.e2e.observe(seconds)
        if series.auth is not None:
            series.auth.inc()
        elif event.status == 401:
            self.auth.child("api_key", "denied", event.error_code or "invalid_api_key").inc()
        if event.status == 413:
            self.body_limit.inc()
        if event.client_cancelled:
            labels = series.labels
            self.cancelled.child(labels[0], labels[3], labels[5], labels[6]).inc()
        for attempt in event.attempt_log:
            self._attempt(series.labels, attempt)
        if series.served is not None:
            self._served(event, series.served)
        elif event.is_fallback and event.requested_model:
            tried = event.attempt_log[-1].served_model if event.attempt_log else ""
            self.fallback_failed.child(event.requested_model, tried).inc()
        for dropped in event.dropped:
            family, _, name = dropped.partition(":")
            self.translation_dropped.child(family, self._drop_label(name)).inc()
        media = event.media
        if media is not None:
            model = event.served_model or ""
            for unit, amount in (
                ("images", media.images),
                ("audio_seconds", media.audio_seconds),
                ("characters", media.characters),
            ):
                if amount:
                    self.media_units.child(event.endpoint, model, unit).inc(amount)
        self.usage_emitted.inc()

    def _drop_label(self, name: str) -> str:
        """A dropped field's label: the codecs' names, but a field a client invented must not
        grow the series without bound, so at most MAX_DROP_LABELS names, then "other"."""
        seen = self._drop_names
        if name in seen:
            return name
        if len(seen) >= MAX_DROP_LABELS or not _DROP_NAME.match(name):
            return "other"
        seen.add(name)
        return name

    def _request_series(self, event: RequestFinished) -> _RequestSeries:
        labels = self._labeller.request(event)
        model, provider, status, outcome = labels[3], event.provider or "", labels[13], labels[14]
        latency = (
            self._env_id,
            event.endpoint,
            model,
            provider or "unknown",
            status_class(event.status),
            labels[11],
        )
        served: _ServedSeries | None = None
        if event.served_model is not None and outcome == "success":
            usage = self._labeller.usage(labels, event.served_model)
            served = _ServedSeries(
                model=model,
                ttft=self.ttft.child(*usage),
                request_ttft=self.request_ttft.child(*latency),
                input=self.input_tokens.child(*usage),
                output=self.output_tokens.child(*usage),
                total=self.total_tokens.child(*usage),
                consumed=self.consumed.child(event.served_model, provider),
                spend=self.spend.child(*usage),
                fallback=self.fallback_ok.child(model, event.served_model)
                if event.is_fallback and event.requested_model
                else None,
            )
        return _RequestSeries(
            labels=labels,
            requests=self.requests.child(event.endpoint, model, provider, status, outcome),
            duration=self.duration.child(event.endpoint, model, outcome),
            proxy_requests=self.proxy_requests.child(*labels),
            proxy_failed=self.proxy_failed.child(*labels) if outcome != "success" else None,
            proxy_duration=self.proxy_duration.child(*self._labeller.duration(labels)),
            e2e=self.e2e.child(*latency),
            auth=self.auth.child("api_key", "allowed", "ok") if event.api_key_id else None,
            served=served,
        )

    def _attempt(self, base: tuple[str, ...], attempt: AttemptFinished) -> None:
        key = (base, attempt.model_id, attempt.served_model, attempt.provider, attempt.status,
               attempt.is_fallback)  # fmt: skip
        series = self._by_attempt.get(key)
        if series is None:
            labels = self._labeller.attempt(base, attempt)
            deployment = self._labeller.deployment(labels)
            result = self.deployment_ok if labels[-1] == "success" else self.deployment_failed
            series = self._by_attempt[key] = _AttemptSeries(
                self.llm_requests.child(*labels),
                self.llm_duration.child(*self._labeller.duration(labels)),
                self.llm_latency.child(*labels[:11]),
                self.deployment_requests.child(*deployment),
                result.child(*deployment),
            )
        series.requests.inc()
        series.duration.observe(attempt.latency_s)
        series.latency.observe(attempt.latency_s)
        series.deployment.inc()
        series.result.inc()

    def _served(self, event: RequestFinished, served: _ServedSeries) -> None:
        if served.fallback is not None:
            served.fallback.inc()
        if event.ttft_ms is not None:
            served.ttft.observe(event.ttft_ms / 1000)
            served.request_ttft.observe(event.ttft_ms / 1000)
        usage = event.usage
        if usage is not None:
            served.input.inc(usage.prompt_tokens)
            served.output.inc(usage.completion_tokens)
            served.total.inc(usage.total_tokens)
            served.consumed.inc(usage.total_tokens)
            client = self._clients.classify(event.user_agent)
            by_client = self._by_client.get((client, served.model))
            if by_client is None:
                by_client = self._by_client[(client, served.model)] = tuple(
                    self.tokens_by_client.child(client, served.model, token_type)
                    for token_type in ("input", "output", "total")
                )
            for one, count in zip(
                by_client, (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
                strict=True,
            ):  # fmt: skip
                if count:
                    one.inc(count)
        if event.cost_usd:
            served.spend.inc(event.cost_usd * 1_000_000)

    def on_reload(
        self,
        successful: bool,
        snapshot: Snapshot | None,
        failure_kind: str | None = None,
        observed_revision: int | None = None,
        config_hash: str | None = None,
    ) -> None:
        self.reloads.child("success" if successful else "failure").inc()
        self.last_reload_ok.set(1 if successful else 0)
        if not successful:
            self.reload_failures.child(failure_kind or "validate").inc()
        if observed_revision is not None:
            self.observed_revision.set(observed_revision)
        if snapshot is None:
            return
        # resource names (provider_key_name) may have changed: look the series up afresh
        self._by_request.clear()
        self._by_attempt.clear()
        self.applied_revision.set(snapshot.revision)
        self.rejected.set(len(snapshot.rejected))
        self.last_success_ts.set(time.time())
        resources: Counter[str] = Counter()
        for kind, _field, count in snapshot.partially_compatible:
            resources[kind] = max(resources[kind], count)
        _set_by_kind(self.partially_compatible, resources)
        stale = Counter(r.kind for r in snapshot.rejected if r.serving_stale_since)
        _set_by_kind(self.stale_served, stale)
        if config_hash is not None:
            self.hash_info.series.clear()
            self.hash_info.child(config_hash).set(1)

    def on_cooldown(self, entry: ModelEntry, state: int, reason: str | None) -> None:
        target = target_of(entry)
        labels = (target.provider, entry.alias, target.upstream_model, target.provider_key_id)
        self.deployment_state.child(*labels).set(state)
        if state == 1:
            self.cooled_down.child(*labels, reason or "unknown").inc()

    def set_budgets(self, rows: list[tuple[tuple[str, str, str], dict[str, float]]]) -> None:
        """Replace the budget gauges with `rows` of ((api_key_id, team_id, user_id), values)."""
        for family in self.budget.values():
            family.series.clear()
        for labels, values in rows:
            for name, value in values.items():
                self.budget[name].child(*labels).set(value)


def _set_by_kind(family: Family, counts: Counter[str]) -> None:
    for labels in list(family.series):
        if labels[0] not in counts:
            family.series[labels].set(0)
    for kind, count in counts.items():
        family.child(kind).set(count)
