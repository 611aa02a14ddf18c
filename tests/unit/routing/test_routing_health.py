"""HealthRegistry: cooldown triggers, lengths and expiry (§8.5), EWMA, in-flight, status (§8.6)."""

from __future__ import annotations

import pytest
from routing_helpers import FakeClock, direct, routing_alias

from aisix.errors import (
    GatewayError,
    RateLimited,
    UpstreamConnectionError,
    UpstreamDecodeError,
    UpstreamServerError,
    UpstreamTimeout,
    upstream_status_error,
)
from aisix.resources import format_rfc3339 as rfc3339
from aisix.routing.health import HealthRegistry


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthRegistry:
    return HealthRegistry(clock=clock, wall=clock.wall)


def status_error(status: int, retry_after: float | None = None) -> GatewayError:
    return upstream_status_error(status, b'{"error": {"message": "nope"}}', retry_after)


def test_server_error_cools_for_default_seconds_then_expires(
    health: HealthRegistry, clock: FakeClock
) -> None:
    model = direct("m1")
    events: list[tuple[str, int, str | None]] = []
    health.on_change = lambda entry, state, reason: events.append((entry.id, state, reason))
    health.record_failure(model, status_error(503))
    assert health.in_cooldown("m1")
    assert health.cooldown_until("m1") == pytest.approx(clock.wall() + 30)
    assert health.cooldown_remaining("m1") == pytest.approx(30)
    assert events == [("m1", 1, "upstream_server_error")]
    clock.advance(29.9)
    assert health.in_cooldown("m1")
    clock.advance(0.2)
    assert not health.in_cooldown("m1")
    assert health.cooldown_until("m1") is None
    assert not health.any_cooling()
    assert events[-1] == ("m1", 0, None)


@pytest.mark.parametrize(
    ("retry_after", "cooldown", "expected"),
    [
        (120, {}, 120),
        (5000, {}, 600),  # capped at max_seconds
        (5000, {"max_seconds": 90}, 90),
        (120, {"honor_retry_after": False}, 30),
        (None, {"default_seconds": 45}, 45),
        (0, {}, 30),  # Retry-After: 0 gives no length; the default applies
    ],
)
def test_cooldown_length_honours_retry_after(
    health: HealthRegistry,
    retry_after: float | None,
    cooldown: dict[str, object],
    expected: float,
) -> None:
    model = direct("m1", cooldown=cooldown)
    health.record_failure(model, status_error(429, retry_after))
    assert health.cooldown_remaining("m1") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, "upstream_auth_failure"),
        (403, "upstream_auth_failure"),
        (408, "upstream_request_timeout"),
        (429, "upstream_rate_limited"),
        (500, "upstream_server_error"),
        (599, "upstream_server_error"),
    ],
)
def test_default_trigger_statuses_cool_with_reason(
    health: HealthRegistry, status: int, reason: str
) -> None:
    model = direct("m1")
    health.record_failure(model, status_error(status))
    assert health.in_cooldown("m1")
    [item] = health.status([model])
    assert item["status_reason"] == reason


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_client_errors_do_not_cool_but_are_recorded(
    health: HealthRegistry, status: int
) -> None:
    model = direct("m1")
    health.record_failure(model, status_error(status))
    assert not health.in_cooldown("m1")
    [item] = health.status([model])
    assert item["status"] == "healthy"
    assert item["last_error"]["status"] == status


def test_custom_trigger_statuses(health: HealthRegistry) -> None:
    model = direct("m1", cooldown={"trigger_statuses": [404]})
    health.record_failure(model, status_error(503))
    assert not health.in_cooldown("m1")
    health.record_failure(model, status_error(404))
    assert health.in_cooldown("m1")
    assert health.status([model])[0]["status_reason"] == "upstream_status_failure"


@pytest.mark.parametrize(
    ("error", "flag", "reason"),
    [
        (
            UpstreamTimeout("upstream request timed out after 100ms"),
            "trigger_on_timeout",
            "request_timeout",
        ),
        (UpstreamConnectionError("connection refused"), "trigger_on_transport", "transport_error"),
        (UpstreamDecodeError("bad body"), "trigger_on_transport", "upstream_decode_error"),
    ],
)
def test_timeout_and_transport_triggers(
    health: HealthRegistry, error: GatewayError, flag: str, reason: str
) -> None:
    on = direct("on")
    off = direct("off", cooldown={flag: False})
    health.record_failure(on, error)
    health.record_failure(off, error)
    assert health.in_cooldown("on")
    assert not health.in_cooldown("off")
    assert health.status([on])[0]["status_reason"] == reason


def test_status_class_error_without_upstream_status_still_cools(health: HealthRegistry) -> None:
    model = direct("m1")
    health.record_failure(model, UpstreamServerError("stream error event"))
    assert health.in_cooldown("m1")


@pytest.mark.parametrize("cooldown", [{"enabled": False}, {"default_seconds": 0}])
def test_cooldown_can_be_turned_off(health: HealthRegistry, cooldown: dict[str, object]) -> None:
    model = direct("m1", cooldown=cooldown)
    health.record_failure(model, status_error(503, 60))
    assert not health.in_cooldown("m1")
    assert health.status([model])[0]["last_error"]["status"] == 503


def test_errors_without_reason_are_ignored(health: HealthRegistry) -> None:
    model = direct("m1")
    health.record_failure(model, RateLimited("rate limit exceeded"))
    assert not health.in_cooldown("m1")
    assert "last_error" not in health.status([model])[0]


def test_success_clears_cooldown(health: HealthRegistry) -> None:
    model = direct("m1")
    events: list[int] = []
    health.on_change = lambda entry, state, reason: events.append(state)
    health.record_failure(model, status_error(500))
    health.record_success(model, 0.2)
    assert not health.in_cooldown("m1")
    assert events == [1, 0]


def test_shorter_cooldown_does_not_cut_a_longer_one(
    health: HealthRegistry, clock: FakeClock
) -> None:
    model = direct("m1")
    events: list[int] = []
    health.on_change = lambda entry, state, reason: events.append(state)
    health.record_failure(model, status_error(429, 300))
    clock.advance(10)
    health.record_failure(model, status_error(500))
    assert health.cooldown_remaining("m1") == pytest.approx(290)
    clock.advance(200)
    health.record_failure(model, status_error(503, 200))  # extends to now + 200
    assert health.cooldown_remaining("m1") == pytest.approx(200)
    assert events == [1]  # extensions are not new entries


def test_cooldown_after_expiry_is_a_new_entry(health: HealthRegistry, clock: FakeClock) -> None:
    model = direct("m1")
    events: list[int] = []
    health.on_change = lambda entry, state, reason: events.append(state)
    health.record_failure(model, status_error(500))
    clock.advance(31)
    health.record_failure(model, status_error(500))
    assert events == [1, 0, 1]


def test_sweep_fires_expiry_without_a_request(health: HealthRegistry, clock: FakeClock) -> None:
    events: list[tuple[str, int]] = []
    health.on_change = lambda entry, state, reason: events.append((entry.id, state))
    health.record_failure(direct("a"), status_error(500))
    health.record_failure(direct("b"), status_error(429, 100))
    clock.advance(50)
    health.sweep()
    assert events == [("a", 1), ("b", 1), ("a", 0)]


def test_latency_ewma(health: HealthRegistry) -> None:
    model = direct("m1")
    assert health.latency_ewma("m1") is None
    health.record_success(model, 1.0)
    assert health.latency_ewma("m1") == pytest.approx(1.0)
    health.record_success(model, 2.0)
    assert health.latency_ewma("m1") == pytest.approx(1.3)
    health.record_success(model, 2.0)
    assert health.latency_ewma("m1") == pytest.approx(0.3 * 2 + 0.7 * 1.3)


def test_fresh_latency_and_probe(health: HealthRegistry, clock: FakeClock) -> None:
    model = direct("m1")
    health.record_success(model, 0.5)
    assert health.fresh_latency("m1", 30) == pytest.approx(0.5)
    clock.advance(31)
    assert health.fresh_latency("m1", 30) is None
    health.mark_probe("m1")
    assert health.fresh_latency("m1", 30) == pytest.approx(0.5)


def test_in_flight_counts(health: HealthRegistry) -> None:
    health.begin("m1")
    health.begin("m1")
    assert health.in_flight("m1") == 2
    health.end("m1")
    health.end("m1")
    health.end("m1")
    assert health.in_flight("m1") == 0
    assert health.in_flight("unknown") == 0
    health.end("unknown")


def test_status_shape(health: HealthRegistry, clock: FakeClock) -> None:
    primary = direct("id-p", display_name="gpt-4o-primary")
    secondary = direct("id-s", display_name="gpt-4o-secondary")
    quiet = direct("id-q", display_name="a-quiet-model")
    chat = routing_alias("id-r", [primary, secondary])
    chat_value = chat.value
    assert chat_value.display_name == "id-r"
    health.record_success(primary, 0.4125)
    health.begin("id-p")
    health.begin("id-p")
    health.record_failure(primary, status_error(503))
    report = health.status([secondary, chat, primary, quiet])
    assert [m["display_name"] for m in report] == [
        "a-quiet-model",
        "gpt-4o-primary",
        "gpt-4o-secondary",
        "id-r",
    ]
    assert report[0] == {
        "id": "id-q",
        "display_name": "a-quiet-model",
        "kind": "direct",
        "status": "healthy",
        "in_flight": 0,
    }
    at = rfc3339(clock.wall())
    assert report[1] == {
        "id": "id-p",
        "display_name": "gpt-4o-primary",
        "kind": "direct",
        "status": "cooldown",
        "cooldown_until": rfc3339(clock.wall() + 30),
        "status_reason": "upstream_server_error",
        "last_error": {"at": at, "status": 503, "message": "upstream returned 503"},
        "latency_ewma_ms": 412.5,
        "in_flight": 2,
    }
    assert report[3] == {
        "id": "id-r",
        "display_name": "id-r",
        "kind": "routing",
        "status": "not_applicable",
    }
    assert at == "2026-01-05T10:00:00Z"
    assert report[1]["cooldown_until"] == "2026-01-05T10:00:30Z"
    clock.advance(31)
    after = health.status([primary])[0]
    assert after["status"] == "healthy"
    assert "cooldown_until" not in after and "status_reason" not in after
    assert after["last_error"]["status"] == 503


def test_prune_forgets_deleted_models(health: HealthRegistry) -> None:
    events: list[tuple[str, int]] = []
    health.on_change = lambda entry, state, reason: events.append((entry.id, state))
    health.record_failure(direct("gone"), status_error(500))
    health.record_success(direct("kept"), 0.1)
    health.prune({"kept"})
    assert not health.in_cooldown("gone")
    assert health.latency_ewma("kept") is not None
    assert events == [("gone", 1), ("gone", 0)]
