"""Routing aliases end to end (contract §5.3, §6.4, §8): strategies, tiers, retry rules,
failover and cooldown, against several scripted fake upstreams on real sockets.

Streaming, client disconnects, the `openai` SDK and metrics/access-log checks are in
`test_routing_streaming.py`; shared helpers in `routing_lab.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_helpers import Gateway, wait_for
from routing_lab import (
    Lab,
    count,
    error_of,
    free_port,
    lab_fixture,
    parse_time,
    served_by,
    start_gateway,
)

from fakes.openai_upstream import Reply

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory, free_port)
    yield gateway
    gateway.stop()


@pytest.fixture
def lab(gw: Gateway) -> Iterator[Lab]:
    yield from lab_fixture(gw)


FAST_COOLDOWN = {"cooldown": {"default_seconds": 1}}


# --- strategies and tiers ---------------------------------------------------------------------


def test_failover_tries_targets_in_declaration_order(lab: Lab) -> None:
    a, b, c = lab.upstream(), lab.upstream(), lab.upstream()
    a.default = Reply.error(500)
    b.default = Reply.error(503)
    names = [lab.target(x, f) for x, f in (("a", a), ("b", b), ("c", c))]
    alias = lab.alias("chat", names, strategy="failover")

    response = lab.call(alias)

    assert response.status == 200, response.text
    assert served_by(response) == names[2]
    assert response.json["model"] == alias
    assert [count(a), count(b), count(c)] == [1, 1, 1]
    times = [a.requests[0].received_at, b.requests[0].received_at, c.requests[0].received_at]
    assert times == sorted(times)
    # the upstream sees the target's model_name, never the alias
    assert c.requests[0].json["model"] == "gpt-4o"


def test_round_robin_spreads_evenly(lab: Lab) -> None:
    fakes = [lab.upstream() for _ in range(3)]
    names = [lab.target(f"t{i}", f) for i, f in enumerate(fakes)]
    alias = lab.alias("rr", names, strategy="round_robin")

    responses = lab.many(alias, 150)

    assert all(r.status == 200 for r in responses)
    # the counter advances once per request: exactly n/3 each
    assert [count(f) for f in fakes] == [50, 50, 50]
    served = [served_by(r) for r in responses]
    assert {n: served.count(n) for n in names} == dict.fromkeys(names, 50)


def test_round_robin_with_weights_is_smooth_weighted(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    alias = lab.alias(
        "swrr",
        [{"model": lab.target("a", a), "weight": 3}, {"model": lab.target("b", b), "weight": 1}],
        strategy="round_robin",
    )

    a_name, b_name = lab.prefix + "a", lab.prefix + "b"
    picks = [served_by(lab.call(alias)) for _ in range(8)]
    # nginx smooth weighted round robin interleaves: a a b a, a a b a
    assert picks == [a_name, a_name, b_name, a_name] * 2
    lab.many(alias, 192)
    assert (count(a), count(b)) == (150, 50)


def test_weighted_distribution_within_bounds(lab: Lab) -> None:
    a, b, c = lab.upstream(), lab.upstream(), lab.upstream()
    alias = lab.alias(
        "w",
        [
            {"model": lab.target("a", a), "weight": 1},
            {"model": lab.target("b", b), "weight": 3},
            {"model": lab.target("c", c), "weight": 0},
        ],
        strategy="weighted",
    )

    responses = lab.many(alias, 200)

    assert all(r.status == 200 for r in responses)
    # a ~ Binomial(200, 1/4): mean 50, sd 6.1; [20, 80] is ±4.9 sd
    assert 20 <= count(a) <= 80, count(a)
    assert count(a) + count(b) == 200
    assert count(c) == 0  # weight 0 never starts while the others are healthy


def test_least_busy_spreads_concurrent_slow_requests(lab: Lab) -> None:
    fakes = [lab.upstream() for _ in range(3)]
    for fake in fakes:
        fake.default = Reply(delay_s=1.0)
    names = [lab.target(f"t{i}", f) for i, f in enumerate(fakes)]
    alias = lab.alias("busy", names, strategy="least_busy")

    with ThreadPoolExecutor(3) as pool:
        pending = []
        for i in range(3):
            pending.append(pool.submit(lab.call, alias))
            # the next request starts once this one is in flight upstream
            wait_for(lambda i=i: sum(count(f) for f in fakes) == i + 1, 5.0, "request in flight")
        results = [p.result() for p in pending]

    assert all(r.status == 200 for r in results)
    assert [count(f) for f in fakes] == [1, 1, 1]
    assert sorted(served_by(r) or "" for r in results) == sorted(names)


def test_least_cost_prefers_the_cheapest_priced_target(lab: Lab) -> None:
    dear, unpriced, cheap = lab.upstream(), lab.upstream(), lab.upstream()
    names = [
        lab.target("dear", dear, pricing={"input_per_million": 10, "output_per_million": 30}),
        lab.target("unpriced", unpriced),
        lab.target("cheap", cheap, pricing={"input_per_million": 0.1, "output_per_million": 0.4}),
    ]
    alias = lab.alias("cost", names, strategy="least_cost")

    assert {served_by(r) for r in lab.many(alias, 10)} == {names[2]}
    assert (count(dear), count(unpriced), count(cheap)) == (0, 0, 10)

    cheap.default = Reply.error(500)
    response = lab.call(alias)
    assert response.status == 200 and served_by(response) == names[0]  # priced before unpriced
    assert (count(dear), count(unpriced), count(cheap)) == (1, 0, 11)


def test_least_latency_moves_to_the_faster_target(lab: Lab) -> None:
    slow, fast = lab.upstream(), lab.upstream()
    slow.default = Reply(delay_s=0.15)
    alias = lab.alias(
        "lat", [lab.target("slow", slow), lab.target("fast", fast)], strategy="least_latency"
    )

    for _ in range(12):
        assert lab.call(alias).status == 200

    assert count(slow) == 1  # one cold sample, then the faster target only
    assert count(fast) == 11


def test_priority_tiers_fall_through_only_when_the_upper_tier_fails_or_cools(lab: Lab) -> None:
    a, b, c = lab.upstream(), lab.upstream(), lab.upstream()
    names = [
        lab.target("a", a, **FAST_COOLDOWN),
        lab.target("b", b, **FAST_COOLDOWN),
        lab.target("c", c),
    ]
    alias = lab.alias(
        "tiers",
        [{"model": names[0]}, {"model": names[1]}, {"model": names[2], "priority": 1}],
        strategy="round_robin",
    )

    lab.many(alias, 20)
    assert (count(a), count(b), count(c)) == (10, 10, 0)

    a.default = b.default = Reply.error(500)
    response = lab.call(alias)
    assert response.status == 200 and served_by(response) == names[2]
    assert (count(a), count(b), count(c)) == (11, 11, 1)

    response = lab.call(alias)  # tier 0 is cooling: straight to tier 1
    assert response.status == 200 and served_by(response) == names[2]
    assert (count(a), count(b), count(c)) == (11, 11, 2)

    a.default = b.default = Reply()
    lab.wait_status(names[0], "healthy", 3.0)
    lab.wait_status(names[1], "healthy", 3.0)
    assert {served_by(r) for r in lab.many(alias, 4)} == {names[0], names[1]}
    assert count(c) == 2


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings"])
def test_failover_on_completions_and_embeddings(lab: Lab, path: str) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(502)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("x", names)

    response = lab.call(alias, path=path)

    assert response.status == 200, response.text
    assert served_by(response) == names[1]
    assert response.json["model"] == alias
    assert [r.path for r in a.model_requests() + b.model_requests()] == [path, path]


# --- retry rules ------------------------------------------------------------------------------


def test_5xx_is_retried_on_the_same_target_then_fails_over(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(500)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("retry", names, retries=2, retry_backoff_ms=20)

    response = lab.call(alias, request_id=f"{lab.prefix}retry")

    assert response.status == 200 and served_by(response) == names[1]
    assert (count(a), count(b)) == (3, 1)
    at = [r.received_at for r in a.requests]
    assert at[1] - at[0] >= 0.018 and at[2] - at[1] >= 0.038  # 20 ms, then 40 ms (+ jitter)
    line = lab.log_line(f"{lab.prefix}retry")
    assert line["attempts"] == 4
    assert [(x["model"], x["status"]) for x in line["attempt_log"]] == [
        (names[0], 500),
        (names[0], 500),
        (names[0], 500),
        (names[1], 200),
    ]


def test_direct_model_uses_its_own_retries_and_ignores_cooldown(lab: Lab) -> None:
    a = lab.upstream()
    a.default = Reply.error(500)
    name = lab.target("a", a, retries=1)
    lab.ready(name)

    error = error_of(lab.call(name), 502)
    assert error == {
        "message": "upstream returned 500",
        "type": "upstream_error",
        "code": "upstream_server_error",
    }
    assert count(a) == 2
    assert lab.status(name)["status"] == "cooldown"
    error_of(lab.call(name), 502)  # cooldown never stops a direct call
    assert count(a) == 4


def test_timeout_fails_over_or_answers_504(lab: Lab) -> None:
    slow, b = lab.upstream(), lab.upstream()
    slow.default = Reply(delay_s=3.0)
    names = [lab.target("slow", slow, timeout=300), lab.target("b", b)]
    alias = lab.alias("to", names)
    only = lab.alias("only", [names[0]], on_all_filtered="original_order")

    start = time.monotonic()
    response = lab.call(alias)
    assert response.status == 200 and served_by(response) == names[1]
    assert time.monotonic() - start < 2.5  # the upstream would take 3 s
    assert lab.status(names[0])["status_reason"] == "request_timeout"

    start = time.monotonic()
    error = error_of(lab.call(only), 504)
    assert time.monotonic() - start < 2.5  # the upstream would take 3 s
    assert error == {"message": "upstream request timed out after 300ms", "type": "timeout"}

    # a direct alias on the upstream.retries default does not retry timeouts (§8.4)
    before = count(slow)
    error_of(lab.call(names[0]), 504)
    assert count(slow) == before + 1


def test_connection_refused_fails_over(lab: Lab) -> None:
    b = lab.upstream()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    names = [lab.target("dead", closed), lab.target("b", b)]
    alias = lab.alias("conn", names)

    response = lab.call(alias)

    assert response.status == 200 and served_by(response) == names[1]
    status = lab.status(names[0])
    assert status["status"] == "cooldown" and status["status_reason"] == "transport_error"
    error = error_of(lab.call(names[0]), 502)
    assert error["type"] == "upstream_error" and error["code"] == "connection_error"


def test_malformed_upstream_json_fails_over(lab: Lab) -> None:
    bad, b = lab.upstream(), lab.upstream()
    bad.default = Reply(raw_body=b'{"choices": [')
    names = [lab.target("bad", bad, retries=0), lab.target("b", b)]
    alias = lab.alias("mal", names)

    response = lab.call(alias)

    assert response.status == 200 and served_by(response) == names[1]
    assert lab.status(names[0])["status_reason"] == "upstream_decode_error"
    error = error_of(lab.call(names[0]), 502)
    assert error["code"] == "upstream_decode_error"


@pytest.mark.parametrize("status", [400, 422])
def test_upstream_4xx_is_returned_at_once(lab: Lab, status: int) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply(
        status=status,
        json={
            "error": {
                "message": "max_tokens is too large",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "invalid_value",
            }
        },
    )
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("c4", names, retries=2)

    error = error_of(lab.call(alias), status)

    assert error == {
        "message": "max_tokens is too large",
        "type": "upstream_error",
        "param": "max_tokens",
        "code": "invalid_value",
    }
    assert (count(a), count(b)) == (1, 0)
    assert lab.status(names[0])["status"] == "healthy"  # a client error says nothing of health


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_502_without_failover_and_cools_the_target(
    lab: Lab, status: int
) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(status, "bad key", "invalid_request_error", code="invalid_api_key")
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("auth", names, retries=2)

    error = error_of(lab.call(alias), 502)

    assert error == {
        "message": f"upstream rejected the provider credentials ({status})",
        "type": "upstream_auth_error",
    }
    assert (count(a), count(b)) == (1, 0)
    state = lab.status(names[0])
    assert state["status"] == "cooldown" and state["status_reason"] == "upstream_auth_failure"
    assert state["last_error"]["status"] == status
    response = lab.call(alias)  # the cooling target is skipped now
    assert response.status == 200 and served_by(response) == names[1]
    assert count(a) == 1


def test_upstream_429_is_not_retried_and_its_retry_after_is_forwarded(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(
        429, "slow down", "rate_limit_error", code="rate_limit_exceeded", retry_after=7
    )
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("r429", names, retries=2)

    response = lab.call(alias)

    error = error_of(response, 429)
    assert error["type"] == "upstream_error" and error["message"] == "slow down"
    assert error.get("code") == "rate_limit_exceeded"
    assert response.headers.get("retry-after") == "7"
    assert (count(a), count(b)) == (1, 0)
    state = lab.status(names[0])
    assert state["status"] == "cooldown" and state["status_reason"] == "upstream_rate_limited"
    remaining = parse_time(state["cooldown_until"]) - time.time()
    assert 4 <= remaining <= 9, remaining  # Retry-After (7 s), not the 30 s default


def test_upstream_429_with_retry_on_429_is_retried_after_retry_after_then_fails_over(
    lab: Lab,
) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(429, "slow down", retry_after=1)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("r429", names, retries=1, retry_on_429=True, retry_backoff_ms=10)
    only = lab.alias("only", [names[0]], retry_on_429=True, on_all_filtered="original_order")

    response = lab.call(alias)

    assert response.status == 200 and served_by(response) == names[1]
    assert (count(a), count(b)) == (2, 1)
    gap = a.requests[1].received_at - a.requests[0].received_at
    assert gap >= 0.95, gap  # Retry-After (1 s) replaced the 10 ms backoff

    response = lab.call(only)  # retried in vain on the last target: 429 with Retry-After
    error_of(response, 429)
    assert response.headers.get("retry-after") == "1"


def test_max_fallbacks_limits_the_targets_tried(lab: Lab) -> None:
    a, b, c = lab.upstream(), lab.upstream(), lab.upstream()
    a.default = b.default = Reply.error(500)
    off = {"cooldown": {"enabled": False}}
    names = [lab.target("a", a, **off), lab.target("b", b, **off), lab.target("c", c)]
    none = lab.alias("none", names, max_fallbacks=0)
    one = lab.alias("one", names, max_fallbacks=1)

    error = error_of(lab.call(none), 502)
    assert error["code"] == "upstream_server_error"
    assert (count(a), count(b), count(c)) == (1, 0, 0)

    error_of(lab.call(one), 502)  # a, then b; c would be a second fallback
    assert (count(a), count(b), count(c)) == (2, 1, 0)


# --- cooldown ---------------------------------------------------------------------------------


def test_cooldown_skips_the_target_until_it_expires(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.script(Reply.error(503))
    names = [lab.target("a", a, **FAST_COOLDOWN), lab.target("b", b)]
    alias = lab.alias("cool", names)

    failed_at = time.time()
    assert served_by(lab.call(alias)) == names[1]
    state = lab.status(names[0])
    assert state["status"] == "cooldown"
    assert state["status_reason"] == "upstream_server_error"
    assert state["last_error"]["status"] == 503
    assert state["last_error"]["message"] == "upstream returned 503"
    assert abs(parse_time(state["last_error"]["at"]) - failed_at) < 2
    assert 0 < parse_time(state["cooldown_until"]) - failed_at <= 3
    assert state["in_flight"] == 0

    assert served_by(lab.call(alias)) == names[1]
    assert count(a) == 1  # skipped while cooling

    lab.wait_status(names[0], "healthy", 3.0)
    response = lab.call(alias)
    assert served_by(response) == names[0]
    assert count(a) == 2
    assert time.time() - failed_at >= 0.9
    assert "latency_ewma_ms" in lab.status(names[0])


def test_cooldown_honours_retry_after_and_max_seconds(lab: Lab) -> None:
    a, b, c = lab.upstream(), lab.upstream(), lab.upstream()
    a.script(Reply.error(503, retry_after=1))  # shorter than default_seconds
    b.script(Reply.error(503, retry_after=3600))  # capped by max_seconds
    names = [
        lab.target("a", a, cooldown={"default_seconds": 60}),
        lab.target("b", b, cooldown={"default_seconds": 60, "max_seconds": 2}),
        lab.target("c", c),
    ]
    alias = lab.alias("ra", names)

    start = time.time()
    assert served_by(lab.call(alias)) == names[2]
    assert parse_time(lab.status(names[0])["cooldown_until"]) - start <= 2.5
    assert parse_time(lab.status(names[1])["cooldown_until"]) - start <= 3.5
    lab.wait_status(names[0], "healthy", 3.0)
    lab.wait_status(names[1], "healthy", 4.0)
    assert served_by(lab.call(alias)) == names[0]


def test_all_targets_cooling_fail_answers_503_and_original_order_tries_anyway(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = b.default = Reply.error(500)
    names = [lab.target("a", a), lab.target("b", b)]
    fail = lab.alias("fail", names, on_all_filtered="fail")
    anyway = lab.alias("anyway", names, on_all_filtered="original_order")

    error_of(lab.call(fail), 502)
    assert (count(a), count(b)) == (1, 1)

    response = lab.call(fail)
    error = error_of(response, 503)
    assert error["type"] == "all_candidates_unavailable"
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert (count(a), count(b)) == (1, 1)  # no upstream was called

    a.default = Reply()
    response = lab.call(anyway)
    assert response.status == 200 and served_by(response) == names[0]
    assert count(a) == 2
    assert lab.status(names[0])["status"] == "healthy"  # a success clears the cooldown


def test_models_status_on_admin_and_status_listener(lab: Lab) -> None:
    a, b = lab.upstream(), lab.upstream()
    a.default = Reply.error(500)
    b.default = Reply(delay_s=0.6)
    names = [lab.target("a", a), lab.target("b", b)]
    alias = lab.alias("st", names)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lab.call, alias)
        busy = wait_for(
            lambda: lab.status(names[1])["in_flight"] == 1 and lab.statuses(), 5.0, "b in flight"
        )
        assert busy[names[1]]["status"] == "healthy"
        assert pending.result().status == 200

    admin = lab.statuses()
    assert admin == lab.statuses("/status/models")
    assert list(admin) == sorted(admin)
    assert admin[alias] == {
        "id": admin[alias]["id"],
        "display_name": alias,
        "kind": "routing",
        "status": "not_applicable",
    }
    cooling = admin[names[0]]
    assert cooling["kind"] == "direct" and cooling["status"] == "cooldown"
    assert set(cooling) >= {"id", "cooldown_until", "status_reason", "last_error", "in_flight"}
    healthy = admin[names[1]]
    assert healthy["status"] == "healthy" and healthy["in_flight"] == 0
    assert "cooldown_until" not in healthy
    assert healthy["latency_ewma_ms"] >= 550
