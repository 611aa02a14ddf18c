"""Candidate lists for routing aliases (contract §8.1, §8.2).

`Router.candidates` turns an alias into the ordered targets the attempt loop tries: targets
the client IP may use, grouped into priority tiers (lowest first), each tier ordered by the
alias's strategy, cooling targets dropped, cut to `max_fallbacks + 1`. The per-alias layout
(tiers, weights, cost order) is compiled once per snapshot entry and cached by alias id, so a
request allocates little beyond the list it returns. Round-robin counters and smooth weighted
round-robin state live here, per (alias id, priority), and survive snapshot swaps.

`least_latency` exploration: a latency sample older than `latency_explore_after` seconds
(default 30) counts as "no sample", so the target sorts first again; when such a stale target
heads the final list the router marks it probed, so one request per window explores it
instead of a burst. Targets never sampled (cold) always sort first, as §8.2 says.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from aisix.errors import AllCandidatesUnavailable, PermissionDenied
from aisix.resources import Routing
from aisix.routing.health import HealthRegistry
from aisix.snapshot import ModelEntry

ClientIP = IPv4Address | IPv6Address

IP_RESTRICTED_MESSAGE: Final = "Access denied: your client IP is not allowed to access this model"
DEFAULT_LATENCY_EXPLORE_AFTER: Final = 30.0
_NO_SAMPLE: Final = -1.0  # sorts before every real latency

_SortKey = Callable[[ModelEntry], float]


class _RoundRobinState:
    """Counter and SWRR current weights of one (alias, tier); survives snapshot swaps."""

    __slots__ = ("counter", "current", "weights")

    def __init__(self, weights: tuple[int, ...]) -> None:
        self.counter = 0
        self.weights = weights
        self.current = [0] * len(weights)


@dataclass(frozen=True, slots=True)
class _Tier:
    priority: int
    targets: tuple[ModelEntry, ...]
    weights: tuple[int, ...]
    total_weight: int
    uniform: bool  # every weight equal: plain counter round robin
    by_cost: tuple[ModelEntry, ...]  # least_cost order, static per snapshot
    restricted: bool  # some target has allowed_cidrs
    rr: _RoundRobinState


@dataclass(frozen=True, slots=True)
class _Plan:
    alias: ModelEntry  # the snapshot entry this plan was compiled from (identity-checked)
    routing: Routing
    tiers: tuple[_Tier, ...]
    keep: int  # max_fallbacks + 1


class Router:
    """Orders the targets of routing aliases; one per process, used from the event loop."""

    def __init__(
        self,
        health: HealthRegistry,
        rng: random.Random | None = None,
        *,
        latency_explore_after: float = DEFAULT_LATENCY_EXPLORE_AFTER,
    ) -> None:
        self.health = health
        self.rng = rng or random.Random()
        self.latency_explore_after = latency_explore_after
        self._plans: dict[str, _Plan] = {}
        self._rr: dict[tuple[str, int], _RoundRobinState] = {}

    def candidates(self, alias: ModelEntry, client_ip: ClientIP | None) -> list[ModelEntry]:
        """The targets to try, in order (§8.1); a single-target alias is its own candidate."""
        if not alias.is_routing:
            return [alias]
        plan = self._plans.get(alias.id)
        if plan is None or plan.alias is not alias:
            plan = self._compile(alias)
        strategy = plan.routing.strategy
        ordered: list[ModelEntry] = []
        for tier in plan.tiers:
            if tier.restricted:
                self._order_restricted(tier, strategy, client_ip, ordered)
            else:
                self._order(tier, strategy, tier.targets, tier.weights, ordered)
        if not ordered:
            raise PermissionDenied(IP_RESTRICTED_MESSAGE, code="ip_restricted")
        health = self.health
        if health.any_cooling():
            kept = [t for t in ordered if not health.in_cooldown(t.id)]
            if kept:
                ordered = kept
            elif plan.routing.on_all_filtered == "fail":
                raise self._all_cooling(alias, ordered)
        if len(ordered) > plan.keep:
            del ordered[plan.keep :]
        if strategy == "least_latency":
            self._claim_probe(ordered[0])
        return ordered

    def prune(self, live_alias_ids: Collection[str]) -> None:
        """Drop cached plans and round-robin state of deleted aliases (on snapshot publish)."""
        for alias_id in [a for a in self._plans if a not in live_alias_ids]:
            del self._plans[alias_id]
        for key in [k for k in self._rr if k[0] not in live_alias_ids]:
            del self._rr[key]

    # --- ordering within a tier -------------------------------------------------------------

    def _order(
        self,
        tier: _Tier,
        strategy: str,
        targets: tuple[ModelEntry, ...],
        weights: tuple[int, ...],
        out: list[ModelEntry],
    ) -> None:
        n = len(targets)
        if strategy == "failover" or n == 1:
            if strategy == "round_robin":
                tier.rr.counter += 1  # advanced once per request whatever the tier's size
            out.extend(targets)
            return
        if strategy == "round_robin":
            start = self._round_robin_start(tier, n)
        elif strategy == "weighted":
            start = self._weighted_start(weights)
        elif strategy == "least_cost" and targets is tier.targets:
            out.extend(tier.by_cost)
            return
        else:
            out.extend(sorted(targets, key=self._sort_key(strategy)))
            return
        out.extend(targets[start:])
        out.extend(targets[:start])

    def _order_restricted(
        self, tier: _Tier, strategy: str, ip: ClientIP | None, out: list[ModelEntry]
    ) -> None:
        allowed = [i for i, t in enumerate(tier.targets) if ip_allowed(t, ip)]
        if len(allowed) == len(tier.targets):
            self._order(tier, strategy, tier.targets, tier.weights, out)
            return
        if not allowed:
            if strategy == "round_robin":
                tier.rr.counter += 1
            return
        if strategy == "round_robin" and not tier.uniform:
            # SWRR state spans the whole tier: rotate from its pick, skipping excluded targets
            start = self._swrr_pick(tier)
            n = len(tier.targets)
            admitted = set(allowed)
            for k in range(n):
                index = (start + k) % n
                if index in admitted:
                    out.append(tier.targets[index])
            return
        targets = tuple(tier.targets[i] for i in allowed)
        weights = tuple(tier.weights[i] for i in allowed)
        self._order(tier, strategy, targets, weights, out)

    def _round_robin_start(self, tier: _Tier, n: int) -> int:
        if not tier.uniform:
            return self._swrr_pick(tier)
        rr = tier.rr
        start = rr.counter % n
        rr.counter += 1
        return start

    @staticmethod
    def _swrr_pick(tier: _Tier) -> int:
        """nginx smooth weighted round robin: one step, returns the chosen index."""
        rr = tier.rr
        current = rr.current
        best = -1
        best_value = 0
        for i, weight in enumerate(tier.weights):
            value = current[i] + weight
            current[i] = value
            if weight > 0 and (best < 0 or value > best_value):
                best, best_value = i, value
        current[best] -= tier.total_weight
        rr.counter += 1
        return best

    def _weighted_start(self, weights: tuple[int, ...]) -> int:
        total = sum(weights)
        if total <= 0:
            return 0  # every weight 0: nothing may start by weight, keep declaration order
        point = self.rng.random() * total
        for i, weight in enumerate(weights):
            point -= weight
            if point < 0 and weight > 0:
                return i
        return max(i for i, w in enumerate(weights) if w > 0)  # float edge: last positive

    def _sort_key(self, strategy: str) -> _SortKey:
        if strategy == "least_busy":
            return self._busy_key
        if strategy == "least_latency":
            return self._latency_key
        return _cost_key  # least_cost (restricted tiers only; others use tier.by_cost)

    def _busy_key(self, target: ModelEntry) -> float:
        return float(self.health.in_flight(target.id))

    def _latency_key(self, target: ModelEntry) -> float:
        value = self.health.fresh_latency(target.id, self.latency_explore_after)
        return _NO_SAMPLE if value is None else value

    def _claim_probe(self, first: ModelEntry) -> None:
        health = self.health
        if (
            health.latency_ewma(first.id) is not None
            and health.fresh_latency(first.id, self.latency_explore_after) is None
        ):
            health.mark_probe(first.id)

    def _all_cooling(
        self, alias: ModelEntry, ordered: list[ModelEntry]
    ) -> AllCandidatesUnavailable:
        remaining = [self.health.cooldown_remaining(t.id) for t in ordered]
        soonest = min((r for r in remaining if r is not None), default=1.0)
        seconds = max(1, math.ceil(soonest))
        return AllCandidatesUnavailable(
            f'all targets of model "{alias.alias}" are cooling down; retry in {seconds}s',
            headers={"Retry-After": str(seconds)},
        )

    # --- compilation ------------------------------------------------------------------------

    def _compile(self, alias: ModelEntry) -> _Plan:
        value = alias.routing
        assert value is not None
        routing = value.routing
        priorities = sorted({priority for _, _, priority in alias.routes})
        tiers = []
        for priority in priorities:
            members = [(t, w) for t, w, p in alias.routes if p == priority]
            targets = tuple(t for t, _ in members)
            weights = tuple(w for _, w in members)
            tiers.append(
                _Tier(
                    priority=priority,
                    targets=targets,
                    weights=weights,
                    total_weight=sum(weights),
                    uniform=len(set(weights)) <= 1,
                    by_cost=tuple(sorted(targets, key=_cost_key)),
                    restricted=any(t.networks for t in targets),
                    rr=self._rr_state(alias.id, priority, weights),
                )
            )
        max_fallbacks = routing.max_fallbacks
        keep = len(alias.routes) if max_fallbacks is None else max_fallbacks + 1
        plan = _Plan(alias, routing, tuple(tiers), keep)
        self._plans[alias.id] = plan
        return plan

    def _rr_state(self, alias_id: str, priority: int, weights: tuple[int, ...]) -> _RoundRobinState:
        key = (alias_id, priority)
        state = self._rr.get(key)
        if state is None or state.weights != weights:
            counter = 0 if state is None else state.counter
            state = self._rr[key] = _RoundRobinState(weights)
            state.counter = counter
        return state


def _cost_key(target: ModelEntry) -> float:
    value = target.direct
    if value is None or value.pricing is None:
        return math.inf
    return value.pricing.input_per_million + value.pricing.output_per_million


def ip_allowed(target: ModelEntry, ip: ClientIP | None) -> bool:
    """Whether a target's own allowed_cidrs admit the client (no list: everyone)."""
    networks = target.networks
    if not networks:
        return True
    if ip is None:
        return False  # an unknown client never passes an explicit allowlist
    mapped = ip.ipv4_mapped if isinstance(ip, IPv6Address) else None
    return any(ip in net or (mapped is not None and mapped in net) for net in networks)
