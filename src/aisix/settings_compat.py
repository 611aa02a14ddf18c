"""Bootstrap sections that exist for AISIX drop-in compatibility (issue 14, aisix-compat.md).

Typed, validated shapes of the AISIX keys aisix did not have: request-id headers, URL rewrites,
User-Agent → client-type rules, histogram buckets, outbound TLS and keep-alive, shutdown drain,
and the sections of features not built yet (`cache`, `tracing`, `metrics.otlp`, `managed`).
`compile_rewrite_template` parses an AISIX rewrite template (`$1`, `${name}`, `$$`) once, so
the proxy only substitutes. Imports no framework; `aisix.settings` composes these sections.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: headers a caller may never use to carry its request id: the id is echoed, logged and sent
#: upstream, so reading it from a credential or trace-context header would leak that value
_RESERVED_ID_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "x-amz-security-token",
        "x-amz-date",
        "x-amz-content-sha256",
        "proxy-authorization",
        "cookie",
        "host",
        "traceparent",
        "tracestate",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


#: AISIX accepts only x-aisix-request-id by default; aisix keeps its contract's x-request-id too
DEFAULT_REQUEST_ID_HEADERS = ("x-aisix-request-id", "x-request-id")


class RequestIdSettings(Section):
    #: inbound headers consulted in order; the first acceptable value becomes the request id
    accept_headers: list[str] = Field(
        default_factory=lambda: ["x-aisix-request-id", "x-request-id"]
    )

    @field_validator("accept_headers")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for entry in value:
            name = entry.strip().lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{entry!r} is not an HTTP header name")
            if name in _RESERVED_ID_HEADERS:
                raise ValueError(f"{entry!r} may not carry a request id")
            if name not in out:
                out.append(name)
        return out


# --- URL rewrites ----------------------------------------------------------------------------

_TEMPLATE_TOKEN = re.compile(r"\$(?:\$|\{([^}]*)\}|([_0-9A-Za-z]+))")
_BAD_TEMPLATE_CHAR = re.compile(r"[?#\s\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class RewriteTemplate:
    """A rewrite template as literal pieces and group references (int index or name)."""

    parts: tuple[str | int | tuple[str], ...]

    def expand(self, match: re.Match[str]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, int):
                out.append(match.group(part) or "")
            else:
                out.append(match.group(part[0]) or "")
        return "".join(out)


def compile_rewrite_template(template: str, pattern: re.Pattern[str]) -> RewriteTemplate:
    """Parse `$1`, `${1}`, `$name`, `${name}` and `$$`; raise ValueError for an unknown group
    or a character a path may not gain (`?`, `#`, whitespace, control)."""
    if _BAD_TEMPLATE_CHAR.search(template):
        raise ValueError("rewrite: may not contain '?', '#', whitespace or control characters")
    parts: list[str | int | tuple[str]] = []
    position = 0
    for token in _TEMPLATE_TOKEN.finditer(template):
        parts.append(template[position : token.start()])
        position = token.end()
        name = token.group(1) if token.group(1) is not None else token.group(2)
        if name is None:
            parts.append("$")
            continue
        if name.isdigit():
            if int(name) > pattern.groups:
                raise ValueError(f"rewrite: unknown capture group ${name}")
            parts.append(int(name))
        elif name in pattern.groupindex:
            parts.append((name,))
        else:
            raise ValueError(f"rewrite: unknown capture group {name!r}")
    parts.append(template[position:])
    return RewriteTemplate(tuple(p for p in parts if p != ""))


class UrlRewrite(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    match: Annotated[str, Field(min_length=1)]
    rewrite: str

    @model_validator(mode="after")
    def _compiles(self) -> UrlRewrite:
        try:
            pattern = re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"match: invalid regex: {exc}") from None
        if pattern.search("") is not None:
            raise ValueError("match: the regex matches the empty string")
        compile_rewrite_template(self.rewrite, pattern)
        return self

    def compiled(self) -> tuple[re.Pattern[str], RewriteTemplate]:
        pattern = re.compile(self.match)
        return pattern, compile_rewrite_template(self.rewrite, pattern)


# --- observability ---------------------------------------------------------------------------

_CLIENT_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ClientTypeRule(Section):
    pattern: Annotated[str, Field(min_length=1)]
    client: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        if len(value.encode()) > 512:
            raise ValueError("pattern: at most 512 bytes")
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"pattern: invalid regex: {exc}") from None
        return value

    @field_validator("client")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _CLIENT_LABEL.match(value):
            raise ValueError("client: must match ^[a-z0-9][a-z0-9._-]*$")
        return value


def _ascending(value: list[float] | None) -> list[float] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("at least one bucket edge is required")
    for edge in value:
        if not math.isfinite(edge) or edge <= 0:
            raise ValueError("bucket edges must be finite and positive")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError("bucket edges must be strictly ascending")
    return value


Buckets = Annotated[list[float] | None, Field(default=None)]


class BucketSettings(Section):
    request_e2e_latency: Buckets = None
    request_ttft: Buckets = None
    guardrail_latency: Buckets = None

    _check = field_validator("request_e2e_latency", "request_ttft", "guardrail_latency")(
        classmethod(lambda cls, v: _ascending(v))
    )


class OtlpSettings(Section):
    enabled: bool = False
    endpoint: str | None = None


class OtlpTracingSettings(OtlpSettings):
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0


class TracingSettings(Section):
    otlp: OtlpTracingSettings = Field(default_factory=OtlpTracingSettings)


# --- outbound connections --------------------------------------------------------------------


class OutboundTLS(Section):
    #: PEM bundle trusted IN ADDITION to the system store (private CAs)
    ca_file: str | None = None
    #: client certificate and key for upstreams that require mutual TLS (both or neither)
    client_cert_file: str | None = None
    client_key_file: str | None = None
    #: false accepts any certificate (test environments only)
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> OutboundTLS:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file must be given together")
        return self


# --- sections of features not built yet ------------------------------------------------------


class ShutdownSettings(Section):
    #: seconds to keep accepting after SIGTERM while /readyz already answers 503
    min_drain_secs: Annotated[int, Field(ge=0)] = 0


class ManagedSettings(Section):
    enabled: bool = False
    cp_base_url: str | None = None
    cp_etcd_endpoint: str | None = None
    cp_ca_cert_file: str | None = None
    cp_cert_pem: str | None = None
    cp_cert_file: str | None = None
    cp_key_pem: str | None = None
    cp_key_file: str | None = None
    cp_ca_pem: str | None = None
    cp_ca_file: str | None = None
    mtls_dir: str = "/var/lib/aisix/mtls"
    dp_id_file: str = "/var/lib/aisix/dp_id"
    #: where the last good snapshot is written and read back at boot when the store is down
    #: (works in every mode; unset or "" = off)
    snapshot_cache_path: str | None = None
    heartbeat_interval_secs: Annotated[int, Field(gt=0)] = 15


CacheBackend = Literal["memory", "redis"]


__all__ = [
    "BucketSettings",
    "CacheBackend",
    "ClientTypeRule",
    "ManagedSettings",
    "OtlpSettings",
    "OutboundTLS",
    "RequestIdSettings",
    "RewriteTemplate",
    "Section",
    "ShutdownSettings",
    "TracingSettings",
    "UrlRewrite",
    "compile_rewrite_template",
]
