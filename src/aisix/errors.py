"""The closed tree of errors a proxy request can end with, and their wire envelopes.

Every failure on the request path is a `GatewayError` carrying its HTTP status, OpenAI `type`
and `code`, and two flags the attempt loop reads (`retryable`, `reached_upstream`). It is mapped
to bytes once per inbound protocol: the OpenAI envelope on `/v1/*`, the Anthropic envelope on
`/v1/messages*`. Admin errors (`{"error_msg": ...}`) live in `aisix.admin`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from aisix.redact import Redactor, current


@dataclass(frozen=True, slots=True)
class UpstreamFault:
    """What a wire family's error body says (message, code, param, type), before the gateway
    classifies the answer by its status (`upstream_status_error`)."""

    message: str | None = None
    code: str | None = None
    param: str | None = None
    type: str | None = None
    #: seconds to wait, when the body says so (Google's RetryInfo) and no header did
    retry_after: float | None = None


class GatewayError(Exception):
    """Base of every request-path error; subclasses fix status, type and flags."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False
    reached_upstream: bool = False
    #: reason label for cooldown and `status_reason` (None: the error does not cool a target)
    reason: str | None = None
    #: the upstream's HTTP status when the error came from an upstream answer
    upstream_status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers: dict[str, str] = headers or {}
        self.extra: dict[str, Any] = extra or {}
        #: upstream Retry-After in seconds, for backoff and cooldown decisions
        self.retry_after = retry_after

    def openai_body(self) -> bytes:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.param:
            err["param"] = self.param
        if self.code:
            err["code"] = self.code
        err.update(self.extra)
        return orjson.dumps({"error": err})

    def anthropic_type(self) -> str:
        if self.type == "billing_error":
            return "billing_error"
        return _ANTHROPIC_TYPES.get(self.status, "api_error")

    def anthropic_body(self) -> bytes:
        return orjson.dumps(
            {"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}}
        )


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_denied"


class ModelNotFound(GatewayError):
    status = 404
    type = "model_not_found"


class UnknownRoute(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_route"


class RequestTooLarge(GatewayError):
    status = 413
    type = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    status = 429
    type = "billing_error"
    code = "budget_exceeded"


class NotImplementedByAdapter(GatewayError):
    status = 501
    type = "not_implemented"


class ServiceUnavailable(GatewayError):
    """The gateway itself cannot serve yet (no snapshot) or is draining."""

    status = 503
    type = "service_unavailable"


class AllCandidatesUnavailable(GatewayError):
    status = 503
    type = "all_candidates_unavailable"


# --- errors that come from an upstream attempt -------------------------------------------


class UpstreamError(GatewayError):
    """An attempt reached (or tried to reach) the upstream and failed. Its status is 502
    unless a subclass says otherwise: an upstream's error event before the first byte is a
    bad gateway answer, never a 500 (issue 12 item 9)."""

    status = 502
    type = "upstream_error"
    reached_upstream = True


class UpstreamClientError(UpstreamError):
    """Upstream 4xx other than 401/403: relayed with the upstream's status and message."""

    reason = "upstream_status_failure"


class UpstreamRateLimited(UpstreamClientError):
    status = 429
    reason = "upstream_rate_limited"


class UpstreamServerError(UpstreamError):
    status = 502
    code = "upstream_server_error"
    retryable = True
    reason = "upstream_server_error"


class UpstreamDecodeError(UpstreamError):
    status = 502
    code = "upstream_decode_error"
    retryable = True
    reason = "upstream_decode_error"


class UpstreamConnectionError(UpstreamError):
    status = 502
    code = "connection_error"
    retryable = True
    reason = "transport_error"


class UpstreamAuthError(UpstreamError):
    status = 502
    type = "upstream_auth_error"
    reason = "upstream_auth_failure"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    retryable = True
    reason = "request_timeout"


class UpstreamPoolTimeout(UpstreamError):
    """No pooled connection to the upstream became free in time: a local wait that never
    reached the upstream, so it neither cools the target (`reason` None) nor fails holds;
    retryable on another target."""

    status = 504
    type = "timeout"
    retryable = True
    reached_upstream = False
    reason = None


class UpstreamResponseTooLarge(UpstreamError):
    """A non-streamed answer over `upstream.max_response_bytes`: unreadable for us (so the
    decode error's status and code), but no sign of an unhealthy target and not worth
    repeating."""

    status = 502
    code = "upstream_decode_error"


def upstream_status_error(
    status: int,
    body: bytes,
    retry_after: float | None,
    parse: Callable[[bytes], UpstreamFault] | None = None,
    *,
    redactor: Redactor | None = None,
) -> UpstreamError:
    """Classify a non-2xx upstream answer into the error the contract (§6.4) prescribes;
    `parse` reads the body in the target family's error shape (default: OpenAI's). Text
    taken from the body (message, code, param) has every known provider secret replaced by
    `***` (`redactor`, else the process's current one)."""
    err: UpstreamError
    if status in (401, 403):
        err = UpstreamAuthError(f"upstream rejected the provider credentials ({status})")
    elif status >= 500:
        err = UpstreamServerError(f"upstream returned {status}")
    else:
        fault = (parse or openai_fault)(body)
        redact = (redactor or current()).redact
        message = redact(fault.message or f"upstream returned {status}")
        code = redact(fault.code) if fault.code is not None else None
        param = redact(fault.param) if fault.param is not None else None
        if retry_after is None:
            retry_after = fault.retry_after  # a hint in the body (Google's RetryInfo)
        headers = {}
        if status == 429 and retry_after is not None:
            # §6.5: whole seconds ≥ 1, whatever form (date, fraction, 0) the upstream used
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        cls = UpstreamRateLimited if status == 429 else UpstreamClientError
        err = cls(message, code=code, param=param, headers=headers, status=status)
        if status == 408:
            err.reason = "upstream_request_timeout"
    err.upstream_status = status
    err.retry_after = retry_after
    return err


def openai_fault(body: bytes) -> UpstreamFault:
    """An OpenAI-shaped error body: `{"error": {"message", "code", "param", "type"}}` or
    `{"error": "text"}`."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamFault()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return UpstreamFault(message=error or None)
    if not isinstance(error, dict):
        return UpstreamFault()
    message, code, param, kind = (error.get(k) for k in ("message", "code", "param", "type"))
    return UpstreamFault(
        message=message if isinstance(message, str) and message else None,
        code=str(code) if code is not None else None,
        param=param if isinstance(param, str) else None,
        type=kind if isinstance(kind, str) else None,
    )
