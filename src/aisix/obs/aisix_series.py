"""Label sets of AISIX's Prometheus series, built once per event for every family that uses them.

AISIX dashboards group and filter the request series by `endpoint`, `inbound_protocol`,
`provider`, `model`, `upstream_model`, `provider_key_id`, `provider_key_name`, `api_key_id`,
`team_id`, `user_id`, `user_name`, `stream`, `is_fallback`, `status`, `outcome`, the usage
series by the first eleven of those, the deployment series by `provider`, `model`,
`upstream_model`, `provider_key_id`. `Labeller` turns a `RequestFinished` (and each of its
attempts) into those tuples, looking up provider key names in the current snapshot. Every
value comes from configuration or a closed set (never a raw client string).
"""

from __future__ import annotations

from dataclasses import dataclass

from aisix.events import AttemptFinished, RequestFinished
from aisix.snapshot import ModelEntry, SnapshotHolder

REQUEST_LABELS = (
    "endpoint",
    "inbound_protocol",
    "provider",
    "model",
    "upstream_model",
    "provider_key_id",
    "provider_key_name",
    "api_key_id",
    "team_id",
    "user_id",
    "user_name",
    "stream",
    "is_fallback",
    "status",
    "outcome",
)
USAGE_LABELS = REQUEST_LABELS[:11]
#: request labels without `is_fallback` (AISIX's duration histograms)
DURATION_LABELS = REQUEST_LABELS[:12] + REQUEST_LABELS[13:]
DEPLOYMENT_LABELS = ("provider", "model", "upstream_model", "provider_key_id")
LATENCY_LABELS = ("env_id", "endpoint", "model", "provider", "status_class", "streaming")


def status_class(status: int) -> str:
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "other"


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class Target:
    """What the labels say about the model that served (or was tried)."""

    provider: str
    upstream_model: str
    provider_key_id: str
    provider_key_name: str


_NO_TARGET = Target("", "", "", "")


def target_of(entry: ModelEntry | None) -> Target:
    if entry is None or entry.provider_key is None or entry.direct is None:
        return _NO_TARGET
    value = entry.direct
    return Target(
        value.provider,
        value.model_name,
        entry.provider_key.id,
        entry.provider_key.value.display_name,
    )


class Labeller:
    def __init__(self, holder: SnapshotHolder | None) -> None:
        self.holder = holder

    def _entry(self, model_id: str | None) -> ModelEntry | None:
        snapshot = self.holder.current if self.holder is not None else None
        if snapshot is None or model_id is None:
            return None
        return snapshot.models_by_id.get(model_id)

    def request(self, event: RequestFinished) -> tuple[str, ...]:
        """REQUEST_LABELS of the request as a whole (model: the alias asked for)."""
        target = target_of(self._entry(event.model_id))
        inbound = "anthropic" if event.endpoint.startswith("/v1/messages") else "openai"
        return (
            event.endpoint,
            inbound,
            event.provider or target.provider,
            event.requested_model or "unresolved",
            event.upstream_model or target.upstream_model,
            event.provider_key_id or target.provider_key_id,
            target.provider_key_name,
            event.api_key_id or "",
            event.team_id or "",
            event.user_id or "",
            "",  # user_name: aisix has no user resources
            _bool(event.stream),
            _bool(event.is_fallback),
            str(event.status),
            event.outcome,
        )

    def attempt(self, base: tuple[str, ...], attempt: AttemptFinished) -> tuple[str, ...]:
        """REQUEST_LABELS of one upstream attempt (model: the target alias that was tried)."""
        target = target_of(self._entry(attempt.model_id))
        ok = 200 <= attempt.status < 400
        return (
            base[0],
            base[1],
            attempt.provider,
            attempt.served_model,
            target.upstream_model,
            target.provider_key_id,
            target.provider_key_name,
            *base[7:11],
            base[11],
            _bool(attempt.is_fallback),
            str(attempt.status),
            "success" if ok else "upstream_error",
        )

    @staticmethod
    def usage(request: tuple[str, ...], served: str) -> tuple[str, ...]:
        """USAGE_LABELS with `model` the serving alias (aisix's token series count by it)."""
        return (*request[:3], served, *request[4:11])

    @staticmethod
    def duration(labels: tuple[str, ...]) -> tuple[str, ...]:
        return labels[:12] + labels[13:]

    @staticmethod
    def deployment(labels: tuple[str, ...]) -> tuple[str, ...]:
        return (labels[2], labels[3], labels[4], labels[5])
