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

from aisix.field_rules import (
    SecretFormatError,
    check_secret,
    header_name,
    header_value,
    no_control_chars,
)
from aisix.field_rules import (
    api_base as api_base_rule,
)
from aisix.field_types import (
    INTEGRAL,
    MAX_BACKOFF_MS,
    MAX_CONCURRENCY,
    MAX_PRICE_PER_MILLION,
    MAX_TEXT,
    MAX_WEIGHT,
    PRINTABLE,
    PROVIDER_KEY_RULES,
    CooldownSeconds,
    Count,
    HeaderName,
    Ident,
    Name,
    Price,
    Retries,
    TimeoutMs,
    Timestamp,
    Usd,
    string_implies,
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
    moment = datetime.fromtimestamp(timestamp, UTC)
    # an explicit four-digit year: strftime's %Y drops the leading zeros of years below 1000
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%SZ")


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
    rps: Count | None = None
    rpm: Count | None = None
    rph: Count | None = None
    rpd: Count | None = None
    tpm: Count | None = None
    tpd: Count | None = None
    concurrency: Annotated[int, Field(gt=0, le=MAX_CONCURRENCY), INTEGRAL] | None = None


class Budget(_Strict):
    limit_usd: Usd
    period: Literal["day", "week", "month", "total"]
    mode: Literal["block", "warn"] = "block"


class Pricing(_Strict):
    input_per_million: Price
    output_per_million: Price
    cached_input_per_million: Price | None = None
    #: USD per generated image (images API)
    per_image: Price = 0.0
    #: USD per second of input audio (audio transcriptions and translations)
    per_audio_second: Price = 0.0
    #: USD per 1000 characters of speech input (audio speech: what TTS providers bill)
    per_1k_characters: Price = 0.0
    #: USD per request, on every endpoint (rerank, moderations, passthrough-free calls…)
    per_request: Price = 0.0


class LegacyCost(_Strict):
    input_per_1k: Annotated[float, Field(ge=0, le=MAX_PRICE_PER_MILLION / 1000)]
    output_per_1k: Annotated[float, Field(ge=0, le=MAX_PRICE_PER_MILLION / 1000)]


class Cooldown(_Strict):
    enabled: bool = True
    default_seconds: CooldownSeconds = 30
    max_seconds: CooldownSeconds = 600
    honor_retry_after: bool = True
    trigger_statuses: list[Annotated[int, Field(ge=100, le=599), INTEGRAL]] | None = None
    trigger_on_timeout: bool = True
    trigger_on_transport: bool = True

    def triggers_on(self, status: int) -> bool:
        if self.trigger_statuses is None:
            return status in (401, 403, 408, 429) or status >= 500
        return status in self.trigger_statuses


# --- provider keys -------------------------------------------------------------------------

Adapter = Literal["openai", "anthropic", "azure-openai", "gemini", "vertex", "bedrock"]


class AzureSettings(_Strict):
    api_version: Annotated[
        str, Field(min_length=1, max_length=64), AfterValidator(no_control_chars)
    ] = "2024-10-21"


FieldName = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class RequestOptions(_Strict):
    param_renames: (
        dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] | None
    ) = None
    default_headers: (
        dict[HeaderName, Annotated[str, Field(json_schema_extra={"pattern": "^[^\\r\\n\\x00]*$"})]]
        | None
    ) = None
    default_body_fields: dict[str, Any] | None = None

    @field_validator("default_headers")
    @classmethod
    def _no_credential_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            header_name(name)
            header_value(name, text)
            lowered = name.lower()
            if lowered in FORBIDDEN_DEFAULT_HEADERS or lowered.startswith("x-amz-"):
                raise ValueError(f"header {name!r} may not be set in default_headers")
        return value

    @field_validator("param_renames")
    @classmethod
    def _plain_renames(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for source, target in (value or {}).items():
            if not source or not target:
                raise ValueError("field names may not be empty")
            no_control_chars(source)
            no_control_chars(target)
        return value


class UpstreamTLS(_Strict):
    ca_cert: str | None = None
    verify: bool = True


class Capabilities(_Strict):
    """Optional upstream APIs this key's server has (None: the adapter's default)."""

    #: OpenAI Responses API at `{base}/responses` (default: only for OpenAI's own API)
    responses: bool | None = None


class ProviderKey(_Strict):
    model_config = ConfigDict(json_schema_extra=PROVIDER_KEY_RULES)

    display_name: Name
    secret: Annotated[str, Field(min_length=1, max_length=65_536)]
    provider: Annotated[str, Field(max_length=64), PRINTABLE, AfterValidator(no_control_chars)] = ""
    adapter: Adapter = "openai"
    api_base: Annotated[str, AfterValidator(api_base_rule)] | None = None
    azure: AzureSettings | None = None
    request: RequestOptions | None = None
    strip_headers: list[HeaderName] = Field(default_factory=lambda: list(DEFAULT_STRIP_HEADERS))
    tls: UpstreamTLS | None = None
    telemetry_tags: dict[str, Any] | None = None
    capabilities: Capabilities | None = None
    #: the bootstrap egress proxy (`upstream.proxy`) for this key: false never, true always,
    #: unset follows `upstream.proxy.only_opted_in`
    egress_proxy: bool | None = None
    #: USD charged to the caller's budgets per `/passthrough` call through this key (answers
    #: carry no price the gateway can read); reserved before the call
    passthrough_price_usd: Price = 0.0

    @field_validator("strip_headers")
    @classmethod
    def _normalise_strip(cls, value: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        for name in value:
            seen.setdefault(header_name(name).lower(), None)
        return list(seen)

    @model_validator(mode="after")
    def _adapter_rules(self) -> ProviderKey:
        try:
            check_secret(self.adapter, self.secret)
        except SecretFormatError as exc:
            raise ValueError(f"secret: {exc}") from None
        if self.azure is not None and self.adapter != "azure-openai":
            raise ValueError("azure: only allowed with adapter azure-openai")
        if self.adapter == "azure-openai" and not self.api_base:
            raise ValueError("api_base: required with adapter azure-openai")
        if self.api_base and "://" not in self.api_base and self.adapter != "azure-openai":
            raise ValueError("api_base: must be an http:// or https:// URL")
        if self.adapter == "openai" and self.provider not in ("", "openai") and not self.api_base:
            raise ValueError(f'api_base: required for provider "{self.provider}"')
        return self


# --- models --------------------------------------------------------------------------------


def _no_star(value: str) -> str:
    if "*" in value:
        raise ValueError("may not contain '*'")
    return value


#: a model's `display_name`: what callers send as `model`
AliasName = Annotated[
    str,
    Field(min_length=1, max_length=128),
    AfterValidator(no_control_chars),
    AfterValidator(_no_star),
]
Cidrs = Annotated[list[str] | None, AfterValidator(_check_cidrs)]


class ModelLimits(_Strict):
    """What the upstream model accepts (used when translating requests to it)."""

    #: the model's output cap: a translated `max_tokens` above it is lowered to it
    max_output_tokens: Annotated[int, Field(gt=0, le=10_000_000)] | None = None


class DirectModel(_Strict):
    display_name: AliasName
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    model_name: Ident
    provider_key_id: Ident
    timeout: TimeoutMs | None = None
    stream_timeout: TimeoutMs | None = None
    retries: Retries | None = None
    rate_limit: RateLimit | None = None
    cooldown: Cooldown | None = None
    pricing: Pricing | None = None
    allowed_cidrs: Cidrs = None
    limits: ModelLimits | None = None

    @field_validator("provider")
    @classmethod
    def _provider_label(cls, value: str) -> str:
        if not PROVIDER_LABEL.fullmatch(value):
            raise ValueError("must match ^[a-z0-9][a-z0-9._-]*$")
        return value


class RoutingTarget(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=128)]
    weight: Annotated[int, Field(ge=0, le=MAX_WEIGHT), INTEGRAL] = 1
    priority: Annotated[int, Field(ge=-MAX_WEIGHT, le=MAX_WEIGHT), INTEGRAL] = 0


class Routing(_Strict):
    strategy: Literal[
        "failover", "round_robin", "weighted", "least_latency", "least_busy", "least_cost"
    ] = "failover"
    targets: Annotated[list[RoutingTarget], Field(min_length=1, max_length=64)]
    retries: Retries = 0
    max_fallbacks: Annotated[int, Field(ge=0, le=64), INTEGRAL] | None = None
    retry_on_429: bool = False
    on_all_filtered: Literal["fail", "original_order"] = "fail"
    retry_backoff_ms: Annotated[int, Field(ge=0, le=MAX_BACKOFF_MS), INTEGRAL] = 100


class RoutingModel(_Strict):
    display_name: AliasName
    routing: Routing
    rate_limit: RateLimit | None = None
    allowed_cidrs: Cidrs = None


Model = DirectModel | RoutingModel


# --- API keys ------------------------------------------------------------------------------


#: a SHA-256 hex digest; the pattern is also stated in the JSON Schema (validated below)
KeyHash = Annotated[str, Field(json_schema_extra={"pattern": KEY_HASH_PATTERN.pattern})]


class ApiKey(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                string_implies("previous_key_hash", "previous_key_expires_at"),
                string_implies("previous_key_expires_at", "previous_key_hash"),
            ]
        }
    )

    key_hash: KeyHash
    allowed_models: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=10_000)]
    display_name: Name | None = None
    team_id: Ident | None = None
    user_id: Ident | None = None
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    expires_at: Timestamp | None = None
    disabled: bool = False
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] = (
        Field(default_factory=dict, max_length=32)
    )
    previous_key_hash: KeyHash | None = None
    previous_key_expires_at: Timestamp | None = None
    #: provider key display names this key may call raw through `/passthrough/{name}/…`
    #: (`["*"]`: every key); default none
    allow_passthrough: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @field_validator("key_hash", "previous_key_hash")
    @classmethod
    def _hex_hash(cls, value: str | None) -> str | None:
        if value is not None and not KEY_HASH_PATTERN.fullmatch(value):
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
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["max_requests"], "properties": {"max_requests": {"type": "integer"}}},
                {"required": ["max_tokens"], "properties": {"max_tokens": {"type": "integer"}}},
            ]
        }
    )

    name: Name
    scope: Literal["api_key", "model", "team", "member", "team_member"]
    scope_ref: Ident
    window: Literal["second", "minute", "hour", "day"]
    max_requests: Count | None = None
    max_tokens: Count | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> RateLimitPolicy:
        if self.max_requests is None and self.max_tokens is None:
            raise ValueError("at least one of max_requests, max_tokens is required")
        return self


class BudgetPolicy(_Strict):
    name: Name
    scope: Literal["team", "user", "provider_key", "model"]
    scope_ref: Ident
    limit_usd: Usd
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
