"""The attempt loop (contract §8.3): per-target limits, upstream call, retry and failover.

For each candidate the router ordered: reserve the target's own limits and budgets (a
refusal skips it), call the upstream, and on failure let the health registry decide
cooldown, then retry the same target or move on as the error's flags say. A streaming
attempt that has already sent its head to the client is final: no retry, no failover.
Success or failure, every hold taken is finished exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from aisix.asgi import Headers, Send
from aisix.errors import BudgetExceeded, GatewayError, NotImplementedByAdapter, RateLimited
from aisix.events import AttemptFinished
from aisix.limits.governor import Hold, ratelimit_headers
from aisix.pricing import Estimate
from aisix.providers.base import Endpoint, UpstreamTarget
from aisix.proxy.anthropic_in import MessagesStream, message_id
from aisix.wire.request import client_wants_usage
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.relay import (
    SSE_HEADERS,
    Keepalive,
    SSEDecoder,
    StreamState,
    read_first,
    relay_rest,
    send_chunk,
)
from aisix.resources import DirectModel, RoutingModel
from aisix.routing.retry import (
    backoff_base_ms,
    backoff_seconds,
    is_retryable,
    retries_for,
    uses_default_retries,
)
from aisix.snapshot import ModelEntry

_RNG = random.Random()


@dataclass(slots=True)
class Served:
    """A successful attempt: the JSON body (non-stream) or the finished stream state."""

    target: ModelEntry
    hold: Hold
    body: dict[str, Any] | None = None
    stream: StreamState | None = None


class StreamSink:
    """How a streaming attempt reaches the client once its first chunk is ready."""

    def __init__(
        self, send: Send, head: Headers, keepalive_s: float, gate: Hold, anthropic: bool = False
    ) -> None:
        self.send = send
        self.head = head
        self.keepalive_s = keepalive_s
        self.gate = gate
        #: an Anthropic `/v1/messages` stream: chunks are re-encoded as Anthropic events
        self.anthropic = anthropic


def upstream_timeouts(rt: ProxyRuntime, model: DirectModel) -> tuple[int, int]:
    """(non-streaming deadline, per-chunk streaming deadline) in ms (contract §5.2)."""
    upstream = rt.settings.upstream
    timeout = model.timeout if model.timeout is not None else upstream.timeout_ms
    if model.stream_timeout is not None:
        stream_timeout = model.stream_timeout
    elif model.timeout is not None:
        stream_timeout = model.timeout
    else:
        stream_timeout = upstream.stream_timeout_ms or upstream.timeout_ms
    return timeout, stream_timeout


async def dispatch(
    rt: ProxyRuntime,
    ctx: RequestContext,
    candidates: list[ModelEntry],
    endpoint: Endpoint,
    body: dict[str, Any],
    est: Estimate,
    sink: StreamSink | None,
) -> Served:
    """Try candidates in order; return the first success or raise the error to answer."""
    alias = ctx.alias
    snapshot = ctx.snapshot
    assert alias is not None and snapshot is not None and ctx.key is not None
    routing = alias.value.routing if isinstance(alias.value, RoutingModel) else None
    default_retries = uses_default_retries(alias)
    backoff_ms = backoff_base_ms(alias)
    last_error: GatewayError | None = None
    limit_error: GatewayError | None = None
    for index, target in enumerate(candidates):
        upstream: UpstreamTarget | None = target.target
        if upstream is None or not upstream.supports(endpoint):
            last_error = NotImplementedByAdapter(f"{endpoint} is not supported by this model")
            continue
        try:
            hold = await rt.governor.admit_attempt(snapshot, ctx.key, target, est, alias)
        except (RateLimited, BudgetExceeded) as refused:
            limit_error = refused
            continue
        retries = retries_for(alias, target, rt.settings.upstream.retries)
        retry = 0
        while True:
            ctx.attempts += 1
            ctx.is_fallback = index > 0
            started = time.perf_counter()
            rt.health.begin(target.id)
            try:
                answer, stream = await _attempt(
                    rt, ctx, target, upstream, endpoint, body, sink, hold
                )
            except GatewayError as err:
                rt.health.end(target.id)
                _log_attempt(ctx, target, err.upstream_status or err.status, started, err.type)
                rt.health.record_failure(target, err)
                retryable = is_retryable(err, routing, default_retries=default_retries)
                if retryable and retry < retries:
                    retry += 1
                    try:
                        await asyncio.sleep(
                            backoff_seconds(retry, backoff_ms, err.retry_after, _RNG)
                        )
                    except BaseException:
                        ctx.open_holds.append(hold)  # cancelled while backing off
                        raise
                    continue
                await hold.fail()
                if not retryable:
                    raise
                last_error = err
                break
            except BaseException:
                # client disconnect (cancellation): the pipeline settles from what was seen
                rt.health.end(target.id)
                ctx.open_holds.append(hold)
                raise
            rt.health.end(target.id)
            return _finish_attempt(rt, ctx, Served(target, hold, answer, stream), started)
    if last_error is not None:
        raise last_error
    if limit_error is not None:
        raise limit_error
    raise NotImplementedByAdapter(f"{endpoint} is not supported by this model")


def _finish_attempt(
    rt: ProxyRuntime, ctx: RequestContext, served: Served, started: float
) -> Served:
    """Health and attempt log for an attempt that produced an answer."""
    target = served.target
    stream = served.stream
    elapsed = time.perf_counter() - started
    if stream is not None and stream.error is not None:
        rt.health.record_failure(target, stream.error)
        _log_attempt(ctx, target, stream.error.status, started, stream.error.type)
        return served
    if stream is not None and stream.first_chunk_at is not None:
        rt.health.record_success(target, stream.first_chunk_at - started)
    else:
        rt.health.record_success(target, elapsed)
    _log_attempt(ctx, target, 200, started, None)
    return served


def _log_attempt(
    ctx: RequestContext, target: ModelEntry, status: int, started: float, error: str | None
) -> None:
    value = target.value
    provider = value.provider if isinstance(value, DirectModel) else ""
    ctx.attempt_log.append(
        AttemptFinished(
            model_id=target.id,
            served_model=target.alias,
            provider=provider,
            status=status,
            latency_s=time.perf_counter() - started,
            error_type=error,
            is_fallback=ctx.is_fallback,
        )
    )


async def _attempt(
    rt: ProxyRuntime,
    ctx: RequestContext,
    target: ModelEntry,
    upstream: UpstreamTarget,
    endpoint: Endpoint,
    body: dict[str, Any],
    sink: StreamSink | None,
    hold: Hold,
) -> tuple[dict[str, Any] | None, StreamState | None]:
    assert isinstance(target.value, DirectModel) and ctx.alias is not None
    timeout_ms, stream_timeout_ms = upstream_timeouts(rt, target.value)
    prepared = upstream.prepare(endpoint, body, sink is not None, ctx.request_id)
    ctx.served = target
    if sink is None:
        parsed, _ = await rt.transport.call_json(upstream, prepared, timeout_ms)
        return parsed, None
    state = StreamState(alias=ctx.alias.alias, client_wants_usage=client_wants_usage(body))
    if sink.anthropic:
        state.encoder = MessagesStream(ctx.alias.alias, message_id(ctx.request_id))
    ctx.stream_state = state
    decoder = SSEDecoder()
    async with rt.transport.open_stream(upstream, prepared, stream_timeout_ms) as response:
        first = await read_first(response, decoder, state, stream_timeout_ms)
        state.first_chunk_at = time.perf_counter()
        ctx.ttft = state.first_chunk_at - ctx.started
        ctx.status = 200
        head = sink.head + ratelimit_headers(sink.gate, hold)
        if ctx.alias.is_routing:
            head.append((b"x-aisix-served-by", target.alias.encode()))
        await sink.send({"type": "http.response.start", "status": 200, "headers": head})
        state.head_sent = True
        if first:
            await send_chunk(sink.send, state, b"".join(first))
        keepalive = Keepalive(sink.keepalive_s, sink.send, state)
        try:
            if state.saw_done:
                state.finished = True
                await sink.send({"type": "http.response.body", "body": state.terminal()})
            else:
                await relay_rest(response, decoder, state, sink.send, stream_timeout_ms)
        finally:
            keepalive.stop()
        if state.saw_done:
            response.release()  # the connection may go back to the pool once the message ends
    return None, state


__all__ = ["SSE_HEADERS", "Served", "StreamSink", "dispatch", "upstream_timeouts"]
