"""The model-endpoint pipeline (contract §6.3), from authentication to the usage event.

authenticate → read body (413) → parse with the route's inbound codec (400) → resolve alias
(404) → allowlist (403) → `allowed_cidrs` (403) → candidates (403/503) → gate limits and
budgets (429) → dispatch → render → settle and emit. It reads one snapshot for the whole
request, does no store I/O, and finishes every hold it took exactly once (`Reservations`),
also when rendering fails or the client disconnects. A client that hangs up on a non-stream
call is noticed too: a watcher starts once the call has run `disconnect_check_ms`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from aisix.asgi import (
    JSON_HEADERS,
    BodyTooLarge,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
)
from aisix.errors import (
    GatewayError,
    ModelNotFound,
    PermissionDenied,
    RequestTooLarge,
    ServiceUnavailable,
)
from aisix.limits.governor import ratelimit_headers
from aisix.pricing import Estimate, estimate_request, media_cost_usd
from aisix.proxy.auth import authenticate
from aisix.proxy.client_ip import parse_ip
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.dispatch import CallBody, Outcome, StreamSink, dispatch
from aisix.proxy.relay import SSE_HEADERS
from aisix.proxy.reservations import Reservations
from aisix.proxy.responses import expand_previous, remember
from aisix.resources import DirectModel
from aisix.snapshot import ModelEntry
from aisix.wire.base import InboundCodec
from aisix.wire.openai_media import MediaInbound, TranscriptionsInbound
from aisix.wire.request import client_wants_usage
from aisix.wire.responses import RESPONSES
from aisix.wire.types import Usage

IP_RESTRICTED = "Access denied: your client IP is not allowed to access this model"
#: a non-stream call running longer than this gets a disconnect watcher (fast calls never do)
DISCONNECT_CHECK_S = 0.5


async def handle_model_call(
    rt: ProxyRuntime,
    ctx: RequestContext,
    inbound: InboundCodec,
    scope: Scope,
    receive: Receive,
    send: Send,
    common: Headers,
) -> None:
    """Serve one model call; errors before any byte was sent are raised to the caller."""
    snapshot = rt.holder.current
    if snapshot is None:
        raise ServiceUnavailable("gateway is not ready")
    ctx.snapshot = snapshot
    ctx.kind = inbound.endpoint
    ctx.key = authenticate(scope, snapshot, time.time())
    media = inbound if isinstance(inbound, MediaInbound) else None
    upload = isinstance(media, TranscriptionsInbound)
    proxy = rt.settings.proxy
    limit = proxy.upload_body_limit_bytes if upload else proxy.request_body_limit_bytes
    try:
        raw = await read_body(receive, scope, limit)
    except BodyTooLarge:
        raise RequestTooLarge(f"request body exceeds {limit}-byte limit") from None
    if isinstance(media, TranscriptionsInbound):
        body = media.parse_upload(raw, _header(scope, b"content-type"))
    else:
        body = inbound.parse(raw)
    ctx.stream = body.get("stream") is True or (media is not None and media.binary_stream)
    alias = snapshot.models_by_alias.get(body["model"])
    if alias is None:
        raise ModelNotFound(f'model "{body["model"]}" not found')
    ctx.alias = alias
    if not ctx.key.allowlist.allows(alias.alias):
        raise PermissionDenied(f'API key is not allowed to use model "{alias.alias}"')
    client_ip = parse_ip(ctx.client_ip) if alias.ip_sensitive else None
    if alias.networks and (client_ip is None or not any(client_ip in n for n in alias.networks)):
        raise PermissionDenied(IP_RESTRICTED, code="ip_restricted")
    candidates = rt.router.candidates(alias, client_ip)
    if media is not None:  # no completion tokens; the units asked for are reserved
        est = Estimate(estimate_request(body, 0, True).prompt_tokens, 0, media.requested(body))
    else:
        est = estimate_request(
            body, rt.settings.ratelimit.estimate_completion_tokens, inbound.endpoint == "embeddings"
        )
    ctx.prompt_estimate = est.prompt_tokens
    if inbound.forward_headers:
        ctx.forward_headers = _forwarded(scope, inbound.forward_headers)
    if inbound.endpoint == "embeddings":
        fmt = body.get("encoding_format")
        ctx.embedding_format = fmt if isinstance(fmt, str) else None
    responses = inbound is RESPONSES
    effective = await expand_previous(rt, ctx, body) if responses else None
    call = CallBody(inbound, body, client_wants_usage(body), effective)
    head = common
    if inbound.name == "openai-chat":
        head = [*head, (b"x-aisix-call-id", ctx.request_id.encode())]
    async with Reservations() as holds:
        gate = holds.take(await rt.governor.admit_gate(snapshot, ctx.key, alias, est, candidates))
        sink = None
        if ctx.stream:
            keepalive = rt.settings.downstream.sse_keepalive_interval_secs
            framing = SSE_HEADERS
            if media is not None:  # binary audio: the upstream's type, and no `: ping` inside
                framing, keepalive = [], 0
            sink = StreamSink(send, framing + head, keepalive, gate)
        outcome = await _dispatch_watching(rt, ctx, candidates, call, est, sink, holds, receive)
        if outcome.body is not None or outcome.raw is not None:
            if outcome.raw is not None:
                content_type, payload = outcome.raw
                headers = [(b"content-type", content_type.encode("latin-1")), *head]
            else:
                headers = JSON_HEADERS + head
                payload = orjson.dumps(outcome.body)
            if alias.is_routing:
                headers = [*headers, (b"x-aisix-served-by", outcome.target.alias.encode())]
            headers += ratelimit_headers(gate, outcome.hold)
            await send_response(send, 200, payload, headers)
            ctx.status = 200  # only now: a head the server refused is still answered
        await _settle(ctx, outcome, holds)
        if responses:
            remember(rt, ctx, outcome, body, call.effective)
        ctx.budget_warnings = [*gate.budget_warnings, *outcome.hold.budget_warnings]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _forwarded(scope: Scope, names: frozenset[bytes]) -> dict[str, str]:
    return {
        name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in names
    }


async def _dispatch_watching(
    rt: ProxyRuntime,
    ctx: RequestContext,
    candidates: list[ModelEntry],
    call: CallBody,
    est: Any,
    sink: StreamSink | None,
    holds: Reservations,
    receive: Receive,
) -> Outcome:
    """Dispatch; a client disconnect cancels the upstream call promptly (streams: watched
    from the start; non-stream calls: once they have run DISCONNECT_CHECK_S)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watcher: list[asyncio.Task[None]] = []

    def start() -> None:
        watcher.append(loop.create_task(_watch_disconnect(receive, ctx, task)))

    timer = None
    if sink is not None:
        start()
    else:
        timer = loop.call_later(DISCONNECT_CHECK_S, start)
    try:
        return await dispatch(rt, ctx, candidates, call, est, sink, holds)
    finally:
        if timer is not None:
            timer.cancel()
        for running in watcher:
            running.cancel()


async def _watch_disconnect(receive: Receive, ctx: RequestContext, task: asyncio.Task[Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state = ctx.stream_state
            if state is not None and state.finished:
                return  # uvicorn reports the completed response as a disconnect
            ctx.client_cancelled = True
            task.cancel()
            return


async def _settle(ctx: RequestContext, outcome: Outcome, holds: Reservations) -> None:
    stream = outcome.stream
    media = outcome.media
    if stream is not None:
        if stream.error is not None:
            ctx.error_type = stream.error.type
            ctx.error_code = stream.error.code
        relay = stream.relay
        usage = relay.usage
        if usage is None:  # media calls bill by their units, not by estimated tokens
            usage = Usage() if media is not None else ctx.estimated_usage(relay.generated_chars)
    elif media is not None:
        usage = outcome.usage or Usage()
    else:
        usage = outcome.usage or ctx.estimated_usage(outcome.answer_chars)
    ctx.usage = usage
    ctx.cost_usd = ctx.cost_of(outcome.target, usage)
    if media is not None:
        ctx.media = media
        value = outcome.target.value
        if isinstance(value, DirectModel):
            ctx.cost_usd += media_cost_usd(value.pricing, media)
    await holds.settle_all(usage, ctx.cost_usd)


__all__ = ["GatewayError", "handle_model_call"]
