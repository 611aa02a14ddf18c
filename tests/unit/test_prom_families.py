"""The lock-free metric families render as Prometheus text with the values they were given."""

from prometheus_client.parser import text_string_to_metric_families

from aisix.obs.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
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
