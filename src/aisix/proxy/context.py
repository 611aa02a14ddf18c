"""Per-request state carried through the pipeline, and the runtime the pipeline runs in.

`ProxyRuntime` bundles the long-lived collaborators (snapshot holder, transport, router,
health registry, governor, event bus) so handlers receive one object. `RequestContext` is
the mutable record of one request; it becomes the `RequestFinished` event at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aisix.events import AttemptFinished, EventBus, MediaUnits, RequestFinished, Usage
from aisix.ids import uuid4_str
from aisix.limits.governor import Governor
from aisix.pricing import cost_usd
from aisix.providers.base import Endpoint
from aisix.providers.transport import Transport
from aisix.proxy.client_ip import ClientIPResolver
from aisix.proxy.egress import Egress
from aisix.responses_store import ResponseStore
from aisix.routing.health import HealthRegistry
from aisix.routing.strategies import Router
from aisix.settings import Settings
from aisix.snapshot import KeyEntry, ModelEntry, Snapshot, SnapshotHolder

_UPSTREAM_ERRORS = frozenset(
    {"upstream_error", "upstream_auth_error", "timeout", "all_candidates_unavailable"}
)


@dataclass(slots=True)
class ProxyRuntime:
    settings: Settings
    holder: SnapshotHolder
    transport: Transport
    router: Router
    health: HealthRegistry
    governor: Governor
    bus: EventBus
    client_ip: ClientIPResolver
    #: stored Responses API answers (None: not kept)
    responses: ResponseStore | None = None
    #: egress proxy choice (None: no proxy configured, every call direct)
    egress: Egress | None = None
    draining: bool = False
    in_flight: int = 0


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str
    method: str
    path: str
    client_ip: str | None
    started: float = field(default_factory=time.perf_counter)
    #: when the response was complete (the event may be built a little later)
    ended: float = 0.0
    ts: float = field(default_factory=time.time)
    kind: Endpoint | None = None
    stream: bool = False
    prompt_estimate: int = 0
    snapshot: Snapshot | None = None
    key: KeyEntry | None = None
    alias: ModelEntry | None = None
    served: ModelEntry | None = None
    status: int = 0
    error_type: str | None = None
    error_code: str | None = None
    attempts: int = 0
    is_fallback: bool = False
    usage: Usage | None = None
    cost_usd: float = 0.0
    ttft: float | None = None
    client_cancelled: bool = False
    budget_warnings: list[str] = field(default_factory=list)
    stream_state: Any = None
    attempt_log: list[AttemptFinished] = field(default_factory=list)
    #: client headers the inbound protocol relays to same-family targets
    forward_headers: dict[str, str] = field(default_factory=dict)
    #: "<family>:<field>" a translated attempt could not express (counted in metrics)
    dropped: list[str] = field(default_factory=list)
    #: media calls: the billable units besides tokens
    media: MediaUnits | None = None
    #: embeddings: the vector encoding the client asked for
    embedding_format: str | None = None
    #: Responses API: the stored response this call continued
    previous_response_id: str | None = None
    #: raw User-Agent; the metrics subscriber maps it to a bounded client_type label
    user_agent: bytes | None = None

    def estimated_usage(self, generated_bytes: int) -> Usage:
        """Usage when the upstream reported none: the prompt estimate, ~4 bytes a token."""
        prompt = self.prompt_estimate
        completion = -(-generated_bytes // 4)
        return Usage(prompt, completion, 0, prompt + completion, estimated=True)

    @staticmethod
    def cost_of(target: ModelEntry | None, usage: Usage) -> float:
        if target is None or target.direct is None:
            return 0.0
        return cost_usd(target.direct.pricing, usage)

    def partial_usage(self) -> tuple[Usage, float] | None:
        """What a stream cancelled after its head delivered: (usage, cost), recorded on the
        request; None when nothing was sent."""
        state = self.stream_state
        if state is None or not state.head_sent:
            return None
        relay = state.relay
        self.usage = relay.usage or self.estimated_usage(relay.generated_chars)
        self.cost_usd = self.cost_of(self.served, self.usage)
        return self.usage, self.cost_usd

    def outcome(self) -> str:
        """Metric outcome; a stream that failed or was abandoned after its 200 head counts
        by what happened, not by the status already sent."""
        error = self.error_type
        if error is None:
            return "success" if 200 <= self.status < 400 else "client_error"
        if error == "billing_error":
            return "budget_exceeded"
        if error == "rate_limit_exceeded":
            return "rate_limited"
        if error in _UPSTREAM_ERRORS or self.status >= 500:
            return "upstream_error"
        return "client_error"

    def finished(self) -> RequestFinished:
        key = self.key.value if self.key else None
        served = self.served
        direct = served.direct if served else None
        return RequestFinished(
            event_id=uuid4_str(),
            request_id=self.request_id,
            ts=self.ts,
            endpoint=self.endpoint,
            method=self.method,
            path=self.path,
            stream=self.stream,
            status=self.status,
            outcome=self.outcome(),
            latency_ms=((self.ended or time.perf_counter()) - self.started) * 1000,
            client_ip=self.client_ip,
            api_key_id=self.key.id if self.key else None,
            team_id=key.team_id if key else None,
            user_id=key.user_id if key else None,
            requested_model=self.alias.alias if self.alias else None,
            model_id=served.id if served else None,
            served_model=served.alias if served else None,
            provider=served.direct.provider if served and served.direct else None,
            provider_key_id=served.provider_key.id if served and served.provider_key else None,
            upstream_model=direct.model_name if direct is not None else None,
            error_type=self.error_type,
            error_code=self.error_code,
            attempts=self.attempts,
            is_fallback=self.is_fallback,
            usage=self.usage,
            cost_usd=self.cost_usd,
            ttft_ms=self.ttft * 1000 if self.ttft is not None else None,
            budget_warnings=self.budget_warnings,
            client_cancelled=self.client_cancelled,
            attempt_log=self.attempt_log,
            user_agent=self.user_agent.decode("latin-1") if self.user_agent else None,
            dropped=self.dropped,
            media=self.media,
        )
