"""The lock-free metric families render as Prometheus text with the values they were given."""

import functools
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from aisix.obs.metrics import Metrics


def samples(
    metrics: Metrics, others: list[Any] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render(others or ()).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counters_gauges_and_histograms_render_their_values() -> None:
    m = Metrics()
    m.requests.child("/v1/chat/completions", "m", "openai", "200", "success").inc()
    m.requests.child("/v1/chat/completions", "m", "openai", "200", "success").inc(2)
    m.duration.child("/v1/chat/completions", "m", "success").observe(0.05)
    m.duration.child("/v1/chat/completions", "m", "success").observe(0.2)
    m.bind_in_flight(lambda: 3.0)
    m.last_reload_ok.set(1)
    m.usage_drops.inc()
    got = samples(m)
    labels = (
        ("endpoint", "/v1/chat/completions"),
        ("model", "m"),
        ("outcome", "success"),
        ("provider", "openai"),
        ("status", "200"),
    )
    assert got[("aisix_requests_total", labels)] == 3.0
    hist = (("endpoint", "/v1/chat/completions"), ("model", "m"), ("outcome", "success"))
    assert (
        got[("aisix_request_duration_seconds_bucket", (*hist[:1], ("le", "0.05"), *hist[1:]))] == 1
    )
    assert (
        got[("aisix_request_duration_seconds_bucket", (*hist[:1], ("le", "0.25"), *hist[1:]))] == 2
    )
    assert (
        got[("aisix_request_duration_seconds_bucket", (*hist[:1], ("le", "+Inf"), *hist[1:]))] == 2
    )
    assert got[("aisix_request_duration_seconds_count", hist)] == 2
    assert abs(got[("aisix_request_duration_seconds_sum", hist)] - 0.25) < 1e-9
    assert got[("aisix_proxy_in_flight_requests", ())] == 3.0
    assert got[("aisix_config_last_reload_successful", ())] == 1.0
    assert got[("aisix_usage_event_drops_total", ())] == 1.0


def test_other_workers_dumps_merge_into_the_rendering() -> None:
    main, worker = Metrics(), Metrics()
    for m, n in ((main, 2), (worker, 3)):
        m.requests.child("/v1/chat/completions", "m", "openai", "200", "success").inc(n)
        m.duration.child("/v1/chat/completions", "m", "success").observe(0.05 * n)
        m.bind_in_flight(functools.partial(float, n))
        m.applied_revision.set(10 + n)
    worker.deployment_state.child("openai", "only-in-worker", "gpt-4o", "pk-1").set(1)
    merged = samples(main, [worker.dump()])

    def value(name: str, **labels: str) -> float:
        return merged[(name, tuple(sorted(labels.items())))]

    route = {"endpoint": "/v1/chat/completions", "model": "m", "outcome": "success"}
    assert value("aisix_requests_total", **route, provider="openai", status="200") == 5
    assert value("aisix_request_duration_seconds_count", **route) == 2
    assert value("aisix_request_duration_seconds_sum", **route) == 0.25
    assert value("aisix_request_duration_seconds_bucket", **route, le="0.1") == 1
    assert value("aisix_request_duration_seconds_bucket", **route, le="0.25") == 2
    assert value("aisix_proxy_in_flight_requests") == 5  # in flight adds up
    assert value("aisix_config_applied_revision") == 13  # state gauges take the maximum
    deployment = {"model": "only-in-worker", "upstream_model": "gpt-4o", "provider_key_id": "pk-1"}
    assert value("aisix_deployment_state", provider="openai", **deployment) == 1
    alone = samples(main)  # nothing of the worker stays behind
    key = (
        "aisix_requests_total",
        tuple(sorted({**route, "provider": "openai", "status": "200"}.items())),
    )
    assert alone[key] == 2
