"""What can go wrong between us and an upstream socket, and what each failure means.

A closed tree modelled on httpx's `_exceptions.py`: every exception the transport raises is a
`TransportError` carrying two facts the attempt loop needs: `reached_upstream` (could the
upstream have seen, or started to work on, the request: limits are then failed, not rolled
back) and `cools_target` (is this evidence against the target's health: a local pool wait is
not). `gateway_error` is the one mapping of these to the contract's `GatewayError`s (§6.4:
connect and transport failures 502 `connection_error`, timeouts 504).
"""

from __future__ import annotations

from aisix.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamPoolTimeout,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)


class TransportError(Exception):
    """Base of every transport failure; subclasses fix the two flags."""

    reached_upstream: bool = True
    cools_target: bool = True


class ConnectError(TransportError):
    """No connection: refused, unreachable, DNS, TLS handshake, or the egress proxy said no."""

    reached_upstream = False


class LocalProtocolError(TransportError):
    """We could not form the request (a header with a line break, an unsupported URL or
    method, unusable TLS files): nothing was sent and the target is not to blame."""

    reached_upstream = False
    cools_target = False


class RemoteProtocolError(TransportError):
    """The upstream's bytes are not an HTTP/1.x response we accept (garbage, headers over the
    size or count cap), or it closed before the response was complete."""


class ConnectionClosed(RemoteProtocolError):
    """The upstream closed the connection before the response was complete."""


class WriteError(TransportError):
    """The connection failed while the request was still being written."""


class ResponseTooLarge(TransportError):
    """A non-streamed body exceeded `upstream.max_response_bytes`; the connection is dropped.
    The same request would get the same answer, and the target is healthy."""

    cools_target = False

    def __init__(self, limit: int) -> None:
        super().__init__(f"upstream response exceeds the {limit}-byte limit")
        self.limit = limit


class TransportTimeout(TransportError, TimeoutError):
    """A deadline passed; `timeout` is the limit in seconds (None if unknown)."""

    def __init__(self, message: str = "", timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class ConnectTimeout(TransportTimeout):
    """The connection (TCP, the egress proxy's tunnel, TLS) was not made within its limit."""

    reached_upstream = False


class PoolTimeout(TransportTimeout):
    """No pooled connection became free in time (`upstream.pool_size_per_host`). A local
    wait: it never cools a healthy target and may be retried on another one."""

    reached_upstream = False
    cools_target = False


class ReadTimeout(TransportTimeout):
    """The response (non-streamed: all of it; streamed: the next read) did not arrive in time."""


class WriteTimeout(TransportTimeout):
    """The upstream did not take the next part of a streamed request body in time."""


def _ms(timeout: float | None) -> int:
    return round(timeout * 1000) if timeout is not None else 0


def gateway_error(exc: TransportError) -> GatewayError:
    """The contract error for a transport failure (§6.4), with the failure's flags."""
    err: GatewayError
    if isinstance(exc, ReadTimeout | WriteTimeout):
        err = UpstreamTimeout(f"upstream request timed out after {_ms(exc.timeout)}ms")
    elif isinstance(exc, PoolTimeout):
        err = UpstreamPoolTimeout(
            f"no connection to the upstream became free within {_ms(exc.timeout)}ms"
        )
    elif isinstance(exc, ConnectTimeout):
        err = UpstreamConnectionError(
            f"could not connect to the upstream within {_ms(exc.timeout)}ms"
        )
    elif isinstance(exc, ResponseTooLarge):
        err = UpstreamResponseTooLarge(str(exc))
    elif isinstance(exc, LocalProtocolError):
        err = UpstreamConnectionError(f"cannot send the upstream request: {exc}")
    else:
        err = UpstreamConnectionError(str(exc) or "upstream transport failure")
    err.reached_upstream = exc.reached_upstream
    if not exc.cools_target:
        err.reason = None
    return err


__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "LocalProtocolError",
    "PoolTimeout",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResponseTooLarge",
    "TransportError",
    "TransportTimeout",
    "WriteError",
    "WriteTimeout",
    "gateway_error",
]
