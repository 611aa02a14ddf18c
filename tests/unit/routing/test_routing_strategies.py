"""Router.candidates: strategies (§8.2), tiers, IP filter, cooldown filter, max_fallbacks (§8.1)."""

from __future__ import annotations

import ipaddress
import math
import random
from collections import Counter

import pytest
from routing_helpers import FakeClock, direct, ids, routing_alias

from aisix.errors import AllCandidatesUnavailable, PermissionDenied, upstream_status_error
from aisix.routing.health import HealthRegistry
from aisix.routing.strategies import Router
from aisix.snapshot import ModelEntry

IP = ipaddress.ip_address("10.1.2.3")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthRegistry:
    return HealthRegistry(clock=clock, wall=clock.wall)


@pytest.fixture
def router(health: HealthRegistry) -> Router:
    return Router(health, random.Random(1234))


def cool(health: HealthRegistry, entry: ModelEntry, retry_after: float | None = None) -> None:
    health.record_failure(entry, upstream_status_error(503, b"", retry_after))


def binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


a, b, c, d = (direct(x) for x in "abcd")


def test_single_target_alias_is_its_own_candidate_even_cooling(
    router: Router, health: HealthRegistry
) -> None:
    cool(health, a)
    assert router.candidates(a, IP) == [a]


def test_failover_keeps_declaration_order(router: Router) -> None:
    alias = routing_alias("r", [c, a, b])
    for _ in range(3):
        assert ids(router.candidates(alias, IP)) == ["c", "a", "b"]


def test_round_robin_rotates_once_per_request(router: Router) -> None:
    alias = routing_alias("r", [a, b, c], strategy="round_robin")
    lists = [ids(router.candidates(alias, IP)) for _ in range(4)]
    assert lists == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    firsts = Counter(router.candidates(alias, IP)[0].id for _ in range(3000))
    assert firsts == {"a": 1000, "b": 1000, "c": 1000}


def test_round_robin_counter_survives_a_snapshot_swap(router: Router) -> None:
    alias = routing_alias("r", [a, b, c], strategy="round_robin")
    router.candidates(alias, IP)
    rebuilt = routing_alias("r", [a, b, c], strategy="round_robin")
    assert ids(router.candidates(rebuilt, IP)) == ["b", "c", "a"]


def test_smooth_weighted_round_robin_exact_sequence(router: Router) -> None:
    alias = routing_alias("r", [(a, 5, 0), (b, 1, 0), (c, 1, 0)], strategy="round_robin")
    firsts = "".join(router.candidates(alias, IP)[0].id for _ in range(14))
    assert firsts == "aabacaa" * 2  # nginx SWRR for 5:1:1
    alias2 = routing_alias("r2", [(a, 5, 0), (b, 1, 0), (c, 1, 0)], strategy="round_robin")
    lists = [ids(router.candidates(alias2, IP)) for _ in range(3)]
    assert lists == [["a", "b", "c"], ["a", "b", "c"], ["b", "c", "a"]]


def test_smooth_weighted_round_robin_never_starts_weight_zero(router: Router) -> None:
    alias = routing_alias("r", [(a, 0, 0), (b, 3, 0), (c, 1, 0)], strategy="round_robin")
    firsts = Counter(router.candidates(alias, IP)[0].id for _ in range(400))
    assert firsts == {"b": 300, "c": 100}


def test_weighted_distribution_3_to_1(router: Router) -> None:
    alias = routing_alias("r", [(a, 3, 0), (b, 1, 0)], strategy="weighted")
    n = 4000
    lists = [ids(router.candidates(alias, IP)) for _ in range(n)]
    firsts = Counter(lst[0] for lst in lists)
    assert binomial_ok(firsts["a"], n, 0.75)
    assert {tuple(lst) for lst in lists} == {("a", "b"), ("b", "a")}


def test_weighted_zero_never_starts_and_rest_follows_declaration_order(router: Router) -> None:
    alias = routing_alias("r", [(a, 1, 0), (b, 0, 0), (c, 2, 0)], strategy="weighted")
    n = 3000
    lists = Counter(tuple(ids(router.candidates(alias, IP))) for _ in range(n))
    assert set(lists) == {("a", "b", "c"), ("c", "a", "b")}
    assert binomial_ok(lists[("c", "a", "b")], n, 2 / 3)


def test_weighted_all_zero_keeps_declaration_order(router: Router) -> None:
    alias = routing_alias("r", [(a, 0, 0), (b, 0, 0)], strategy="weighted")
    assert ids(router.candidates(alias, IP)) == ["a", "b"]


def test_least_latency_orders_by_ewma_cold_first(router: Router, health: HealthRegistry) -> None:
    alias = routing_alias("r", [a, b, c, d], strategy="least_latency")
    health.record_success(a, 0.9)
    health.record_success(c, 0.2)
    assert ids(router.candidates(alias, IP)) == ["b", "d", "c", "a"]
    health.record_success(b, 0.5)
    health.record_success(d, 0.5)
    assert ids(router.candidates(alias, IP)) == ["c", "b", "d", "a"]  # tie keeps order


def test_least_latency_explores_stale_targets_once_per_window(
    health: HealthRegistry, clock: FakeClock
) -> None:
    router = Router(health, random.Random(1), latency_explore_after=30)
    fast, slow = direct("fast"), direct("slow")
    alias = routing_alias("r", [fast, slow], strategy="least_latency")
    latency = {"fast": 0.1, "slow": 0.5}
    served: Counter[str] = Counter()
    for _ in range(600):  # ten minutes, one request per second
        clock.advance(1)
        first = router.candidates(alias, IP)[0]
        served[first.id] += 1
        health.record_success(first, latency[first.id])
    # the slow target gets one exploratory request per ~30 s window, no more, no fewer
    assert 15 <= served["slow"] <= 25
    assert served["fast"] == 600 - served["slow"]


def test_least_latency_recovered_target_gets_traffic_again(
    health: HealthRegistry, clock: FakeClock
) -> None:
    router = Router(health, random.Random(1), latency_explore_after=30)
    alias = routing_alias("r", [a, b], strategy="least_latency")
    health.record_success(a, 0.2)
    health.record_success(b, 0.1)
    cool(health, b, retry_after=120)
    assert ids(router.candidates(alias, IP)) == ["a"]
    clock.advance(121)
    health.record_success(a, 0.2)
    assert router.candidates(alias, IP)[0].id == "b"


def test_least_busy_orders_by_in_flight(router: Router, health: HealthRegistry) -> None:
    alias = routing_alias("r", [a, b, c], strategy="least_busy")
    assert ids(router.candidates(alias, IP)) == ["a", "b", "c"]
    for model_id, n in (("a", 3), ("b", 1), ("c", 1)):
        for _ in range(n):
            health.begin(model_id)
    assert ids(router.candidates(alias, IP)) == ["b", "c", "a"]
    health.end("a")
    health.end("a")
    health.end("a")
    assert ids(router.candidates(alias, IP)) == ["a", "b", "c"]


def test_least_busy_spreads_concurrent_requests(router: Router, health: HealthRegistry) -> None:
    alias = routing_alias("r", [a, b, c], strategy="least_busy")
    for _ in range(30):
        health.begin(router.candidates(alias, IP)[0].id)
    assert [health.in_flight(x) for x in "abc"] == [10, 10, 10]


def test_least_cost_orders_by_price_unpriced_last(router: Router) -> None:
    pricey = direct("pricey", pricing={"input_per_million": 10, "output_per_million": 30})
    cheap = direct("cheap", pricing={"input_per_million": 0.5, "output_per_million": 1.0})
    same = direct("same", pricing={"input_per_million": 1, "output_per_million": 1})
    legacy = direct("legacy", cost={"input_per_1k": 0.01, "output_per_1k": 0.01})  # 20 / M
    unpriced = direct("unpriced")
    alias = routing_alias("r", [unpriced, pricey, same, cheap, legacy], strategy="least_cost")
    assert ids(router.candidates(alias, IP)) == ["cheap", "same", "legacy", "pricey", "unpriced"]
    twin = direct("twin", pricing={"input_per_million": 0.5, "output_per_million": 1.5})
    tie = routing_alias("t", [twin, same], strategy="least_cost")
    assert ids(router.candidates(tie, IP)) == ["twin", "same"]  # 2.0 == 2.0, stable


def test_tiers_lowest_priority_first_each_ordered_by_strategy(router: Router) -> None:
    alias = routing_alias(
        "r", [(a, 1, 5), (b, 1, 0), (c, 1, 5), (d, 1, -1)], strategy="round_robin"
    )
    lists = [ids(router.candidates(alias, IP)) for _ in range(3)]
    assert lists == [["d", "b", "a", "c"], ["d", "b", "c", "a"], ["d", "b", "a", "c"]]


def test_tier_fall_through_when_upper_tier_cools(
    router: Router, health: HealthRegistry, clock: FakeClock
) -> None:
    alias = routing_alias("r", [(a, 1, 0), (b, 1, 0), (c, 1, 1), (d, 1, 2)])
    cool(health, a)
    assert ids(router.candidates(alias, IP)) == ["b", "c", "d"]
    cool(health, b)
    assert ids(router.candidates(alias, IP)) == ["c", "d"]
    cool(health, c)
    assert ids(router.candidates(alias, IP)) == ["d"]
    clock.advance(31)
    assert ids(router.candidates(alias, IP)) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("max_fallbacks", "expected"), [(None, 4), (0, 1), (1, 2), (9, 4)])
def test_max_fallbacks_caps_the_list(
    router: Router, max_fallbacks: int | None, expected: int
) -> None:
    extra = {} if max_fallbacks is None else {"max_fallbacks": max_fallbacks}
    alias = routing_alias("r", [a, b, c, d], **extra)
    assert ids(router.candidates(alias, IP)) == ["a", "b", "c", "d"][:expected]


def test_max_fallbacks_applies_after_cooldown_filter(
    router: Router, health: HealthRegistry
) -> None:
    alias = routing_alias("r", [a, b, c], max_fallbacks=1)
    cool(health, a)
    assert ids(router.candidates(alias, IP)) == ["b", "c"]


def test_all_cooling_fails_with_retry_after_to_earliest_end(
    router: Router, health: HealthRegistry, clock: FakeClock
) -> None:
    alias = routing_alias("chat-prod", [a, b])
    cool(health, a, retry_after=100)
    cool(health, b, retry_after=40)
    clock.advance(12.5)
    with pytest.raises(AllCandidatesUnavailable) as caught:
        router.candidates(alias, IP)
    assert caught.value.status == 503
    assert caught.value.type == "all_candidates_unavailable"
    assert caught.value.headers == {"Retry-After": "28"}
    clock.advance(27.3)  # 0.2 s left: still at least 1
    with pytest.raises(AllCandidatesUnavailable) as caught:
        router.candidates(alias, IP)
    assert caught.value.headers == {"Retry-After": "1"}
    clock.advance(0.3)
    assert ids(router.candidates(alias, IP)) == ["b"]


def test_all_cooling_original_order_tries_anyway(router: Router, health: HealthRegistry) -> None:
    alias = routing_alias("r", [(a, 1, 1), (b, 1, 0), (c, 1, 0)], on_all_filtered="original_order")
    for entry in (a, b, c):
        cool(health, entry)
    assert ids(router.candidates(alias, IP)) == ["b", "c", "a"]
    capped = routing_alias("r2", [a, b, c], on_all_filtered="original_order", max_fallbacks=0)
    assert ids(router.candidates(capped, IP)) == ["a"]


def test_target_cidrs_filter_candidates(router: Router) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    lab = direct("lab", allowed_cidrs=["192.168.0.0/24", "2001:db8::/32"])
    alias = routing_alias("r", [lab, a, office])
    assert ids(router.candidates(alias, IP)) == ["a", "office"]
    assert ids(router.candidates(alias, ipaddress.ip_address("192.168.0.7"))) == ["lab", "a"]
    assert ids(router.candidates(alias, ipaddress.ip_address("2001:db8::1"))) == ["lab", "a"]
    mapped = ipaddress.ip_address("::ffff:10.1.9.9")
    assert ids(router.candidates(alias, mapped)) == ["a", "office"]
    assert ids(router.candidates(alias, None)) == ["a"]  # unknown client: restricted dropped


def test_no_target_admits_the_client_is_ip_restricted(router: Router) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    alias = routing_alias("r", [office, direct("lab", allowed_cidrs=["10.2.0.0/16"])])
    with pytest.raises(PermissionDenied) as caught:
        router.candidates(alias, ipaddress.ip_address("8.8.8.8"))
    assert caught.value.status == 403
    assert caught.value.code == "ip_restricted"
    assert caught.value.message == (
        "Access denied: your client IP is not allowed to access this model"
    )


def test_ip_filter_comes_before_cooldown(router: Router, health: HealthRegistry) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    alias = routing_alias("r", [office, b])
    cool(health, b)
    with pytest.raises(AllCandidatesUnavailable):  # step 1 admits b, step 4 drops it
        router.candidates(alias, ipaddress.ip_address("8.8.8.8"))
    assert ids(router.candidates(alias, IP)) == ["office"]
    cool(health, office)
    with pytest.raises(PermissionDenied):  # step 1 first: nothing admitted is a 403
        router.candidates(routing_alias("r2", [office]), ipaddress.ip_address("8.8.8.8"))


def test_round_robin_over_the_admitted_targets(router: Router) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    alias = routing_alias("r", [a, office, b], strategy="round_robin")
    outside = ipaddress.ip_address("8.8.8.8")
    lists = [ids(router.candidates(alias, outside)) for _ in range(4)]
    assert lists == [["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]]


def test_swrr_over_the_admitted_targets(router: Router) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    alias = routing_alias("r", [(a, 2, 0), (office, 1, 0), (b, 1, 0)], strategy="round_robin")
    outside = ipaddress.ip_address("8.8.8.8")
    lists = [ids(router.candidates(alias, outside)) for _ in range(4)]
    # SWRR over a:2 office:1 b:1 picks a, office, b, a; office's turn falls to the next admitted
    assert lists == [["a", "b"], ["b", "a"], ["b", "a"], ["a", "b"]]


@pytest.mark.parametrize("strategy", ["weighted", "least_cost", "least_busy", "least_latency"])
def test_every_strategy_honours_the_ip_filter(router: Router, strategy: str) -> None:
    office = direct("office", allowed_cidrs=["10.1.0.0/16"])
    alias = routing_alias("r", [office, a, b], strategy=strategy)
    outside = ipaddress.ip_address("8.8.8.8")
    for _ in range(20):
        assert set(ids(router.candidates(alias, outside))) == {"a", "b"}


def test_prune_forgets_deleted_aliases(router: Router) -> None:
    alias = routing_alias("r", [a, b], strategy="round_robin")
    router.candidates(alias, IP)
    router.prune({"other"})
    assert ids(router.candidates(alias, IP)) == ["a", "b"]  # counter restarted
    router.prune({"r"})
    assert ids(router.candidates(alias, IP)) == ["b", "a"]
