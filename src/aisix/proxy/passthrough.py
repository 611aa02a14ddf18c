"""`ANY /passthrough/{provider_key_display_name}/{path}`: a raw relay to a provider key's base.

The caller key authenticates and must list the provider key in `allow_passthrough` (or `*`;
403 otherwise, 404 for an unknown key when it may use any). The request (method, path, query,
body) goes to `{provider base}/{path}` with the caller's headers minus hop-by-hop ones, every
inbound credential header and the key's `strip_headers`; the provider's `authorize` adds its
credential (bedrock signs the raw request). The answer — any status — is relayed as it
arrives. The caller key's rate limits, concurrency and budgets apply: the key's
`passthrough_price_usd` is reserved and charged per call, and token counts of an OpenAI- or
Anthropic-shaped JSON answer are counted against token limits. A body that arrives in one
piece is sent as bytes; a longer upload is streamed upstream as it arrives, at the upstream's
pace (with the client's Content-Length, or chunked), never held whole unless the provider
signs the payload (bedrock). Either way it is bounded by `proxy.upload_body_limit_bytes`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import orjson

from aisix.asgi import (
    BodyTooLarge,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    body_part,
    declared_length,
)
from aisix.errors import (
    ModelNotFound,
    PermissionDenied,
    RequestTooLarge,
    ServiceUnavailable,
    UnknownRoute,
)
from aisix.events import AttemptFinished
from aisix.limits.governor import ratelimit_headers
from aisix.pricing import Estimate
from aisix.providers.base import Provider, StreamedBody, TLSConfig, UpstreamRequest
from aisix.providers.transport import timeout_error
from aisix.proxy.auth import authenticate
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.dispatch import upstream_timeouts
from aisix.proxy.reservations import Reservations
from aisix.resources import DirectModel
from aisix.snapshot import KeyEntry, ModelEntry, ProviderKeyEntry, Snapshot
from aisix.transport.errors import TransportError, gateway_error
from aisix.wire.types import Usage

PREFIX = "/passthrough/"
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})
#: never forwarded upstream: hop-by-hop headers, the framing we redo, caller credentials
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
    }
)
#: not relayed back: hop-by-hop and framing (the ASGI server re-frames the body)
_DROP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "upgrade"}
)
#: JSON answers up to this size are read for token usage while they are relayed
_USAGE_SCAN_LIMIT = 1024 * 1024


def split_path(path: str) -> tuple[str, str]:
    """(provider key display name, the rest of the path with its leading slash)."""
    name, _, rest = path[len(PREFIX) :].partition("/")
    return name, "/" + rest


def allowed(key: KeyEntry, name: str) -> bool:
    names = key.value.allow_passthrough
    return "*" in names or name in names


def provider_for(snapshot: Snapshot, entry: ProviderKeyEntry) -> tuple[ModelEntry, Provider]:
    """A built provider of a model using the key (it holds the credential and TLS)."""
    for model in snapshot.models_by_id.values():
        pk = model.provider_key
        if pk is not None and pk.id == entry.id and model.target is not None:
            return model, model.target
    raise ModelNotFound(
        f'provider key "{entry.value.display_name}" is used by no model: passthrough calls '
        "authenticate with a model's provider"
    )


def upstream_headers(scope: Scope, strip: list[str]) -> dict[str, str]:
    stripped = set(strip)
    headers: dict[str, str] = {"Accept-Encoding": "identity"}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        if name in _DROP_REQUEST or name in stripped or name.startswith("x-aisix-"):
            continue
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def usage_of(body: bytes) -> Usage | None:
    """Token usage of an OpenAI- or Anthropic-shaped JSON answer, if it has one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    output = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(prompt, int) or not isinstance(output, int):
        return None
    return Usage(prompt, output, 0, prompt + output)


async def serve_passthrough(
    rt: ProxyRuntime,
    ctx: RequestContext,
    scope: Scope,
    receive: Receive,
    send: Send,
    common: Headers,
) -> None:
    snapshot = rt.holder.current
    if snapshot is None:
        raise ServiceUnavailable("gateway is not ready")
    ctx.snapshot = snapshot
    key = authenticate(scope, snapshot, time.time())
    ctx.key = key
    name, rest = split_path(ctx.path)
    if not key.value.allow_passthrough:
        raise PermissionDenied("API key is not allowed to use passthrough")
    if not allowed(key, name):
        raise PermissionDenied(f'API key is not allowed to use passthrough to "{name}"')
    entry = next(
        (pk for pk in snapshot.provider_keys.values() if pk.value.display_name == name), None
    )
    if entry is None:
        raise UnknownRoute(f'provider key "{name}" not found', code="provider_key_not_found")
    if ctx.method not in METHODS:
        raise UnknownRoute(
            f"method {ctx.method} not allowed on passthrough",
            status=405,
            headers={"Allow": ", ".join(sorted(METHODS))},
        )
    model, provider = provider_for(snapshot, entry)
    ctx.served = model
    limit = rt.settings.proxy.upload_body_limit_bytes
    try:
        body = await request_body(receive, scope, limit)
    except BodyTooLarge:
        raise too_large(limit) from None
    base: str = getattr(provider, "base", "")
    raw_path = scope.get("raw_path")
    if raw_path:  # the client's own encoding of the path
        rest = "/" + raw_path.decode("latin-1")[len(PREFIX) :].partition("/")[2]
    query = scope.get("query_string") or b""
    url = base.rstrip("/") + rest + ("?" + query.decode("latin-1") if query else "")
    headers = upstream_headers(scope, entry.value.strip_headers)
    tls = getattr(provider, "tls", None)
    if not base or not isinstance(tls, TLSConfig):
        raise ServiceUnavailable(f'provider key "{name}" has no upstream to pass through to')
    if isinstance(body, StreamedBody):
        request = UpstreamRequest(ctx.method, url, headers, b"", tls, stream_body=body)
    else:
        request = UpstreamRequest(ctx.method, url, headers, body, tls)
    price = entry.value.passthrough_price_usd
    assert isinstance(model.value, DirectModel)
    timeout_ms, stream_timeout_ms = upstream_timeouts(rt, model.value)
    async with Reservations() as holds:
        hold = holds.take(await rt.governor.admit_key(snapshot, key, Estimate(0, 0), price))
        head = common + ratelimit_headers(hold)
        ctx.attempts = 1
        started = time.perf_counter()
        try:  # a streamed upload may pass the limit while it is signed or sent
            request = await provider.authorize(request)
            if rt.egress is not None:
                request.proxy = rt.egress.proxy(model, request.url)
            usage = await _relay(rt, ctx, request, send, head, timeout_ms, stream_timeout_ms)
        except BodyTooLarge:
            raise too_large(limit) from None
        ctx.attempt_log.append(
            AttemptFinished(
                model_id=model.id,
                served_model=model.alias,
                provider=model.value.provider,
                status=ctx.status,
                latency_s=time.perf_counter() - started,
                error_type=ctx.error_type,
                is_fallback=False,
            )
        )
        if ctx.status >= 400:
            await holds.fail(hold)
            return
        ctx.usage = usage
        ctx.cost_usd = price
        await holds.settle_all(usage, price)


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"request body exceeds {limit}-byte limit")


async def request_body(receive: Receive, scope: Scope, limit: int) -> bytes | StreamedBody:
    """The client's body: bytes if it came in one piece (most calls), else a `StreamedBody`
    that yields the rest as it arrives. Raises BodyTooLarge past `limit` (0: none), also
    later, from the stream."""
    length = declared_length(scope, limit)
    first, size, more = body_part(await receive(), 0, limit)
    if not more:
        return first
    return StreamedBody(_rest(receive, first, size, limit), length)


async def _rest(
    receive: Receive, first: bytes, size: int, limit: int
) -> AsyncGenerator[bytes, None]:
    yield first
    more = True
    while more:
        chunk, size, more = body_part(await receive(), size, limit)
        if chunk:
            yield chunk


async def _relay(
    rt: ProxyRuntime,
    ctx: RequestContext,
    request: UpstreamRequest,
    send: Send,
    common: Headers,
    timeout_ms: int,
    stream_timeout_ms: int,
) -> Usage:
    """Send, then relay status, headers and body as they arrive; the usage it carried."""
    timeout = (timeout_ms or stream_timeout_ms) / 1000 or None
    try:
        response = await rt.transport.upstream.send(request, stream=True, timeout=timeout)
    except TransportError as exc:
        raise gateway_error(exc) from None
    read_timeout = stream_timeout_ms / 1000 if stream_timeout_ms else None
    try:
        head: Headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items()
            if name not in _DROP_RESPONSE
        ]
        kind = response.headers.get("content-type", "")
        scan = "json" in kind
        seen: list[bytes] = []
        size = 0
        await send(
            {"type": "http.response.start", "status": response.status, "headers": head + common}
        )
        ctx.status = response.status
        while True:
            try:
                data = await response.read_chunk(read_timeout)
            except TimeoutError:
                ctx.error_type = timeout_error(stream_timeout_ms).type
                break
            except TransportError:
                ctx.error_type = "upstream_error"
                break
            if not data:
                break
            if scan:
                size += len(data)
                if size <= _USAGE_SCAN_LIMIT:
                    seen.append(data)
                else:
                    scan = False
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except ClientGone:
        ctx.client_cancelled = True
        raise
    finally:
        response.close()
    found = usage_of(b"".join(seen)) if scan and seen else None
    return found if found is not None else Usage()


__all__ = ["PREFIX", "serve_passthrough"]
