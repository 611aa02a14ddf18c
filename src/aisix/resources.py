"""Typed resource values (contract §5) and the one field-validation routine for all of them.

Each kind is a pydantic model that forbids unknown fields at every level and uses strict
types, so a JSON `"30000"` where an integer belongs is a 400, not a silent coercion.
`validate_value(kind, raw)` turns a raw JSON object into the typed value or raises
`ResourceInvalid` whose message names the offending field by its JSON path
(`routing.targets[0].wieght`). `stored_value` gives the dict a store persists: the fields
the writer sent plus the materialised defaults. Cross-resource checks live in `aisix.loader`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

KINDS = ("provider_keys", "models", "api_keys", "rate_limit_policies", "budget_policies")
SECRET_MASK = "***"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
PROVIDER_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FORBIDDEN_DEFAULT_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "host",
        "proxy-authorization",
    }
)
DEFAULT_STRIP_HEADERS = ["authorization", "cookie", "set-cookie", "x-api-key"]


class ResourceInvalid(ValueError):
    """A resource value failed validation; the message is safe to show to the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegNumber = Annotated[float, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries a zone; raise ValueError otherwise."""
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError("must be an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(value.replace("z", "Z"))
    if parsed.tzinfo is None:
        raise ValueError("must be an RFC 3339 timestamp with a time zone")
    return parsed


def format_rfc3339(timestamp: float) -> str:
    """A Unix time as the RFC 3339 UTC string used in every JSON body (`...T10:00:30Z`)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_rfc3339(value: str | None) -> str | None:
    if value is not None:
        parse_rfc3339(value)
    return value


def _check_cidrs(values: list[str] | None) -> list[str] | None:
    for entry in values or []:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a CIDR or IP address") from None
    return values


# --- shared objects ------------------------------------------------------------------------


class RateLimit(_Strict):
    rps: PositiveInt | None = None
    rpm: PositiveInt | None = None
    rph: PositiveInt | None = None
    rpd: PositiveInt | None = None
    tpm: PositiveInt | None = None
    tpd: PositiveInt | None = None
    concurrency: PositiveInt | None = None


class Budget(_Strict):
    limit_usd: Annotated[float, Field(gt=0)]
    period: Literal["day", "week", "month", "total"]
    mode: Literal["block", "warn"] = "block"


class Pricing(_Strict):
    input_per_million: NonNegNumber
    output_per_million: NonNegNumber
    cached_input_per_million: NonNegNumber | None = None
    #: USD per generated image (images API)
    per_image: NonNegNumber = 0.0
    #: USD per second of input audio (audio transcriptions and translations)
    per_audio_second: NonNegNumber = 0.0
    #: USD per 1000 characters of speech input (audio speech: what TTS providers bill)
    per_1k_characters: NonNegNumber = 0.0
    #: USD per request, on every endpoint (rerank, moderations, passthrough-free calls…)
    per_request: NonNegNumber = 0.0


class LegacyCost(_Strict):
    input_per_1k: NonNegNumber
    output_per_1k: NonNegNumber


class Cooldown(_Strict):
    enabled: bool = True
    default_seconds: NonNegInt = 30
    max_seconds: NonNegInt = 600
    honor_retry_after: bool = True
    trigger_statuses: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    trigger_on_timeout: bool = True
    trigger_on_transport: bool = True

    def triggers_on(self, status: int) -> bool:
        if self.trigger_statuses is None:
            return status in (401, 403, 408, 429) or status >= 500
        return status in self.trigger_statuses


# --- provider keys -------------------------------------------------------------------------

Adapter = Literal["openai", "anthropic", "azure-openai", "gemini", "vertex", "bedrock"]


class AzureSettings(_Strict):
    api_version: Annotated[str, Field(min_length=1)] = "2024-10-21"


class RequestOptions(_Strict):
    param_renames: dict[str, str] | None = None
    default_headers: dict[str, str] | None = None
    default_body_fields: dict[str, Any] | None = None

    @field_validator("default_headers")
    @classmethod
    def _no_credential_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            lowered = name.lower()
            if lowered in FORBIDDEN_DEFAULT_HEADERS or lowered.startswith("x-amz-"):
                raise ValueError(f"header {name!r} may not be set in default_headers")
        return value


class UpstreamTLS(_Strict):
    ca_cert: str | None = None
    verify: bool = True


class Capabilities(_Strict):
    """Optional upstream APIs this key's server has (None: the adapter's default)."""

    #: OpenAI Responses API at `{base}/responses` (default: only for OpenAI's own API)
    responses: bool | None = None


class ProviderKey(_Strict):
    display_name: Name
    secret: Annotated[str, Field(min_length=1)]
    provider: str = ""
    adapter: Adapter = "openai"
    api_base: str | None = None
    azure: AzureSettings | None = None
    request: RequestOptions | None = None
    strip_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_STRIP_HEADERS))
    tls: UpstreamTLS | None = None
    telemetry_tags: dict[str, Any] | None = None
    capabilities: Capabilities | None = None
    #: the bootstrap egress proxy (`upstream.proxy`) for this key: false never, true always,
    #: unset follows `upstream.proxy.only_opted_in`
    egress_proxy: bool | None = None
    #: USD charged to the caller's budgets per `/passthrough` call through this key (answers
    #: carry no price the gateway can read); reserved before the call
    passthrough_price_usd: NonNegNumber = 0.0

    @field_validator("strip_headers")
    @classmethod
    def _normalise_strip(cls, value: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        for name in value:
            seen.setdefault(name.lower(), None)
        return list(seen)

    @model_validator(mode="after")
    def _adapter_rules(self) -> ProviderKey:
        if self.azure is not None and self.adapter != "azure-openai":
            raise ValueError("azure: only allowed with adapter azure-openai")
        if self.adapter == "azure-openai" and not self.api_base:
            raise ValueError("api_base: required with adapter azure-openai")
        if self.adapter == "openai" and self.provider not in ("", "openai") and not self.api_base:
            raise ValueError(f'api_base: required for provider "{self.provider}"')
        return self


# --- models --------------------------------------------------------------------------------


def _no_star(value: str) -> str:
    if "*" in value:
        raise ValueError("may not contain '*'")
    return value


#: a model's `display_name`: what callers send as `model`
AliasName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_star)]
Cidrs = Annotated[list[str] | None, AfterValidator(_check_cidrs)]


class ModelLimits(_Strict):
    """What the upstream model accepts (used when translating requests to it)."""

    #: the model's output cap: a translated `max_tokens` above it is lowered to it
    max_output_tokens: Annotated[int, Field(gt=0, le=10_000_000)] | None = None


class DirectModel(_Strict):
    display_name: AliasName
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    model_name: Annotated[str, Field(min_length=1)]
    provider_key_id: Annotated[str, Field(min_length=1)]
    timeout: NonNegInt | None = None
    stream_timeout: NonNegInt | None = None
    retries: NonNegInt | None = None
    rate_limit: RateLimit | None = None
    cooldown: Cooldown | None = None
    pricing: Pricing | None = None
    allowed_cidrs: Cidrs = None
    limits: ModelLimits | None = None

    @field_validator("provider")
    @classmethod
    def _provider_label(cls, value: str) -> str:
        if not PROVIDER_LABEL.match(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9._-]*$")
        return value


class RoutingTarget(_Strict):
    model: Annotated[str, Field(min_length=1)]
    weight: NonNegInt = 1
    priority: int = 0


class Routing(_Strict):
    strategy: Literal[
        "failover", "round_robin", "weighted", "least_latency", "least_busy", "least_cost"
    ] = "failover"
    targets: Annotated[list[RoutingTarget], Field(min_length=1, max_length=64)]
    retries: NonNegInt = 0
    max_fallbacks: NonNegInt | None = None
    retry_on_429: bool = False
    on_all_filtered: Literal["fail", "original_order"] = "fail"
    retry_backoff_ms: NonNegInt = 100


class RoutingModel(_Strict):
    display_name: AliasName
    routing: Routing
    rate_limit: RateLimit | None = None
    allowed_cidrs: Cidrs = None


Model = DirectModel | RoutingModel


# --- API keys ------------------------------------------------------------------------------


class ApiKey(_Strict):
    key_hash: str
    allowed_models: list[str]
    display_name: Name | None = None
    team_id: Annotated[str, Field(min_length=1)] | None = None
    user_id: Annotated[str, Field(min_length=1)] | None = None
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    expires_at: str | None = None
    disabled: bool = False
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] = (
        Field(default_factory=dict, max_length=32)
    )
    previous_key_hash: str | None = None
    previous_key_expires_at: str | None = None
    #: provider key display names this key may call raw through `/passthrough/{name}/…`
    #: (`["*"]`: every key); default none
    allow_passthrough: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @field_validator("key_hash", "previous_key_hash")
    @classmethod
    def _hex_hash(cls, value: str | None) -> str | None:
        if value is not None and not KEY_HASH_PATTERN.match(value):
            raise ValueError("must be 64 lowercase hex characters (SHA-256)")
        return value

    _times = field_validator("expires_at", "previous_key_expires_at")(
        classmethod(lambda cls, v: _check_rfc3339(v))
    )

    @model_validator(mode="after")
    def _previous_pair(self) -> ApiKey:
        if (self.previous_key_hash is None) != (self.previous_key_expires_at is None):
            raise ValueError("previous_key_hash and previous_key_expires_at must be set together")
        return self


# --- policies ------------------------------------------------------------------------------


class RateLimitPolicy(_Strict):
    name: Name
    scope: Literal["api_key", "model", "team", "member", "team_member"]
    scope_ref: Annotated[str, Field(min_length=1)]
    window: Literal["second", "minute", "hour", "day"]
    max_requests: PositiveInt | None = None
    max_tokens: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> RateLimitPolicy:
        if self.max_requests is None and self.max_tokens is None:
            raise ValueError("at least one of max_requests, max_tokens is required")
        return self


class BudgetPolicy(_Strict):
    name: Name
    scope: Literal["team", "user", "provider_key", "model"]
    scope_ref: Annotated[str, Field(min_length=1)]
    limit_usd: Annotated[float, Field(gt=0)]
    period: Literal["day", "week", "month", "total"]
    mode: Literal["block", "warn"] = "block"


Resource = ProviderKey | DirectModel | RoutingModel | ApiKey | RateLimitPolicy | BudgetPolicy

_SIMPLE_KINDS: dict[str, type[_Strict]] = {
    "provider_keys": ProviderKey,
    "api_keys": ApiKey,
    "rate_limit_policies": RateLimitPolicy,
    "budget_policies": BudgetPolicy,
}

#: fields whose defaults are written into the stored value (contract: *materialised*)
_MATERIALISED: dict[type[_Strict], tuple[str, ...]] = {
    ProviderKey: ("provider", "adapter", "strip_headers"),
}


def identity_of(kind: str, value: Resource) -> str | None:
    """The unique name a resource is known by (`display_name` or `name`)."""
    if isinstance(value, RateLimitPolicy | BudgetPolicy):
        return value.name
    return value.display_name


def validate_value(kind: str, raw: Any) -> Resource:
    """Validate one raw JSON value of `kind`; raise ResourceInvalid naming the field."""
    if not isinstance(raw, Mapping):
        raise ResourceInvalid("request body must be a JSON object")
    data = dict(raw)
    if kind == "provider_keys":
        data = _provider_key_aliases(data)
    if kind == "models":
        if "cost" in data and "routing" not in data:
            data = _legacy_cost(data)
        cls: type[_Strict] = RoutingModel if "routing" in data else DirectModel
    else:
        cls = _SIMPLE_KINDS[kind]
    try:
        return cls.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ResourceInvalid(describe_validation_error(exc)) from None


def stored_value(value: Resource) -> dict[str, Any]:
    """The JSON dict a store persists: fields that were set, plus materialised defaults."""
    dumped: dict[str, Any] = value.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    for name in _MATERIALISED.get(type(value), ()):
        dumped[name] = getattr(value, name)
    return dumped


def public_value(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    """The value as admin reads show it: provider secrets masked."""
    if kind == "provider_keys" and "secret" in value:
        return {**value, "secret": SECRET_MASK}
    return value


def describe_validation_error(exc: ValidationError) -> str:
    """One operator-readable line for the first pydantic error, naming the JSON path."""
    first = exc.errors()[0]
    path = format_path(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        return f'unknown field "{path}"'
    if kind == "missing":
        return f'missing field "{path}"'
    message = str(first["msg"])
    message = message.removeprefix("Value error, ")
    if not path:
        return message
    return f"{path}: {message}"


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-after") or part in ("DirectModel", "RoutingModel"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _provider_key_aliases(data: dict[str, Any]) -> dict[str, Any]:
    if "api_key" in data:
        if "secret" in data:
            raise ResourceInvalid('only one of "secret" and "api_key" may be given')
        data["secret"] = data.pop("api_key")
    return data


def _legacy_cost(data: dict[str, Any]) -> dict[str, Any]:
    if "pricing" in data:
        raise ResourceInvalid('only one of "pricing" and "cost" may be given')
    cost = data.pop("cost")
    try:
        legacy = LegacyCost.model_validate(cost)
    except ValidationError as exc:
        raise ResourceInvalid("cost." + describe_validation_error(exc)) from None
    data["pricing"] = {
        "input_per_million": legacy.input_per_1k * 1000,
        "output_per_million": legacy.output_per_1k * 1000,
    }
    return data
