"""The attempt loop (contract §8.3): per-target limits, upstream call, retry and failover.

For each candidate the router ordered: reserve the target's own limits and budgets (a
refusal skips it), call the upstream, and on failure let the health registry decide
cooldown, then retry the same target or move on as the error's flags say. Per attempt the
inbound family and the target's family decide the path: the same family relays the client's
body and the upstream's bytes with only `model` rewritten; different families translate
through the canonical structs. A streaming attempt that has sent its head is final. The loop
returns an `Outcome`; every hold it took is in the request's `Reservations`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from aisix.asgi import Headers, Send
from aisix.errors import BudgetExceeded, GatewayError, NotImplementedByAdapter, RateLimited
from aisix.events import AttemptFinished, MediaUnits
from aisix.limits.governor import Hold, ratelimit_headers
from aisix.pricing import Estimate
from aisix.providers.base import Provider, UpstreamCall
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.media import send_media
from aisix.proxy.relay import Keepalive as Keepalive
from aisix.proxy.relay import StreamState, read_first, relay_rest, send_chunk
from aisix.proxy.reservations import Reservations
from aisix.resources import DirectModel
from aisix.routing.retry import (
    backoff_base_ms,
    backoff_seconds,
    is_retryable,
    retries_for,
    uses_default_retries,
)
from aisix.snapshot import ModelEntry
from aisix.wire.anthropic import CountTokens
from aisix.wire.base import InboundCodec, StreamRelay
from aisix.wire.openai_in import EmbeddingsInbound
from aisix.wire.openai_media import MediaInbound
from aisix.wire.translate import TranslatingRelay
from aisix.wire.types import ChatRequest, Usage

_RNG = random.Random()


@dataclass(slots=True)
class Outcome:
    """A successful attempt: the answer body (non-stream) or the finished stream state."""

    target: ModelEntry
    hold: Hold
    body: dict[str, Any] | None = None
    usage: Usage | None = None
    #: bytes of generated text in a non-stream answer (for an estimate without usage)
    answer_chars: int = 0
    stream: StreamState | None = None
    #: the answer came from a same-family relay (not translated)
    native: bool = False
    #: a non-JSON answer relayed as is: (content type, bytes)
    raw: tuple[str, bytes] | None = None
    #: media calls: the units billed besides tokens
    media: MediaUnits | None = None


class StreamSink:
    """How a streaming attempt reaches the client once its first bytes are ready."""

    __slots__ = ("gate", "head", "keepalive_s", "send")

    def __init__(self, send: Send, head: Headers, keepalive_s: float, gate: Hold) -> None:
        self.send = send
        self.head = head
        self.keepalive_s = keepalive_s
        self.gate = gate


class CallBody:
    """The client's checked body (what answers echo), the body sent upstream (`effective`:
    the same, unless the gateway expanded something such as a stored conversation), and the
    canonical form, built at most once (on the first attempt that translates)."""

    __slots__ = ("_canonical", "_max_tokens", "body", "effective", "inbound", "include_usage")

    def __init__(
        self,
        inbound: InboundCodec,
        body: dict[str, Any],
        include_usage: bool,
        effective: dict[str, Any] | None = None,
    ) -> None:
        self.inbound = inbound
        self.body = body
        self.effective = body if effective is None else effective
        self.include_usage = include_usage
        self._canonical: ChatRequest | None = None
        self._max_tokens: int | None = None

    def canonical(self) -> ChatRequest:
        """The canonical request, as parsed (an earlier attempt's per-target changes undone)."""
        if self._canonical is None:
            self._canonical = self.inbound.to_canonical(self.effective)
            self._max_tokens = self._canonical.max_tokens
        else:
            self._canonical.dropped = []
            self._canonical.max_tokens = self._max_tokens
        return self._canonical


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
    call: CallBody,
    est: Estimate,
    sink: StreamSink | None,
    holds: Reservations,
) -> Outcome:
    """Try candidates in order; return the first success or raise the error to answer."""
    alias = ctx.alias
    snapshot = ctx.snapshot
    assert alias is not None and snapshot is not None and ctx.key is not None
    endpoint = call.inbound.endpoint
    routing = alias.routing.routing if alias.routing is not None else None
    default_retries = uses_default_retries(alias)
    backoff_ms = backoff_base_ms(alias)
    last_error: GatewayError | None = None
    limit_error: GatewayError | None = None
    for index, target in enumerate(candidates):
        upstream: Provider | None = target.target
        if upstream is None or not (upstream.supports(endpoint) or endpoint == "count_tokens"):
            last_error = _unsupported(target, call.inbound)
            continue
        try:
            admitted = await rt.governor.admit_attempt(snapshot, ctx.key, target, est, alias)
        except (RateLimited, BudgetExceeded) as refused:
            limit_error = refused
            continue
        hold = holds.take(admitted)
        retries = retries_for(alias, target, rt.settings.upstream.retries)
        retry = 0
        while True:
            ctx.attempts += 1
            ctx.is_fallback = index > 0
            started = time.perf_counter()
            rt.health.begin(target.id)
            try:
                outcome = await _attempt(rt, ctx, target, upstream, call, sink, hold, holds)
            except GatewayError as err:
                rt.health.end(target.id)
                _log_attempt(ctx, target, err.upstream_status or err.status, started, err.type)
                rt.health.record_failure(target, err)
                retryable = is_retryable(err, routing, default_retries=default_retries)
                if retryable and retry < retries:
                    retry += 1
                    await asyncio.sleep(backoff_seconds(retry, backoff_ms, err.retry_after, _RNG))
                    continue
                await holds.fail(hold)
                if not retryable:
                    raise
                last_error = err
                break
            except BaseException:
                rt.health.end(target.id)  # cancelled: the reservations finish the holds
                raise
            rt.health.end(target.id)
            return _finish_attempt(rt, ctx, outcome, started)
    if last_error is not None:
        raise last_error
    if limit_error is not None:
        raise limit_error
    raise NotImplementedByAdapter(f"{endpoint} is not supported by this model")


def _unsupported(target: ModelEntry, inbound: InboundCodec) -> NotImplementedByAdapter:
    adapter = target.provider_key.value.adapter if target.provider_key else "?"
    if isinstance(inbound, MediaInbound):  # "images are not supported by the … adapter"
        return NotImplementedByAdapter(f"{inbound.subject} not supported by the {adapter} adapter")
    return NotImplementedByAdapter(f"{inbound.endpoint} is not supported by the {adapter} adapter")


def _finish_attempt(
    rt: ProxyRuntime, ctx: RequestContext, outcome: Outcome, started: float
) -> Outcome:
    """Health and attempt log for an attempt that produced an answer."""
    target = outcome.target
    stream = outcome.stream
    elapsed = time.perf_counter() - started
    if stream is not None and stream.error is not None:
        rt.health.record_failure(target, stream.error)
        _log_attempt(ctx, target, stream.error.status, started, stream.error.type)
        return outcome
    if stream is not None and stream.first_chunk_at is not None:
        rt.health.record_success(target, stream.first_chunk_at - started)
    else:
        rt.health.record_success(target, elapsed)
    _log_attempt(ctx, target, 200, started, None)
    return outcome


def _log_attempt(
    ctx: RequestContext, target: ModelEntry, status: int, started: float, error: str | None
) -> None:
    provider = target.direct.provider if target.direct is not None else ""
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
    upstream: Provider,
    call: CallBody,
    sink: StreamSink | None,
    hold: Hold,
    holds: Reservations,
) -> Outcome:
    model = target.direct
    assert model is not None and ctx.alias is not None
    inbound = call.inbound
    alias = ctx.alias.alias
    timeout_ms, stream_timeout_ms = upstream_timeouts(rt, model)
    # the endpoint names the wire format (chat, messages, responses…): a provider that serves
    # it natively takes the client's body as is
    native = upstream.native(inbound.endpoint)
    if isinstance(inbound, CountTokens) and not native:  # a local estimate, free
        return Outcome(target, hold, inbound.estimate(call.body), Usage())
    spec = UpstreamCall(inbound.endpoint, sink is not None, ctx.request_id)
    spec.client_headers = ctx.forward_headers
    if native:
        spec.body = call.effective
    elif isinstance(inbound, EmbeddingsInbound):
        spec.embedding = inbound.to_embeddings(call.body)
    else:
        spec.canonical = canonical = call.canonical()
        limits = model.limits
        cap = limits.max_output_tokens if limits is not None else None
        if cap is not None and (canonical.max_tokens is None or canonical.max_tokens > cap):
            canonical.max_tokens = cap
    request = await upstream.authorize(upstream.build(spec))
    if spec.canonical is not None and spec.canonical.dropped:
        ctx.dropped = [f"{upstream.family}:{name}" for name in spec.canonical.dropped]
    ctx.served = target
    if rt.egress is not None:
        request.proxy = rt.egress.proxy(target, request.url)
    parse = upstream.codec.parse_error
    media = inbound if isinstance(inbound, MediaInbound) else None
    if sink is None and media is not None:
        content_type, raw = await send_media(rt.transport, request, timeout_ms, parse)
        answer = media.answer(content_type, raw, alias, call.body)
        return Outcome(target, hold, answer.body, answer.usage, raw=answer.raw, media=answer.units)
    if sink is None:
        parsed, _ = await rt.transport.send_json(request, timeout_ms, parse)
        return _answer(ctx, target, upstream, inbound, hold, parsed, native, alias, call.body)
    relay: StreamRelay
    if native:
        relay = inbound.passthrough_stream(alias, call.body)
    else:
        encoder = inbound.stream_encoder(alias, ctx.request_id, call.body)
        relay = TranslatingRelay(upstream.codec.stream_decoder(), encoder)
    state = StreamState(relay)
    ctx.stream_state = state
    async with rt.transport.stream(request, stream_timeout_ms, parse) as response:
        first = await read_first(response, state, stream_timeout_ms)
        state.first_chunk_at = time.perf_counter()
        ctx.ttft = state.first_chunk_at - ctx.started
        head = sink.head + ratelimit_headers(sink.gate, hold)
        if media is not None:  # binary audio: the upstream's content type
            kind = response.headers.get("content-type") or "application/octet-stream"
            head.append((b"content-type", kind.encode("latin-1")))
        if ctx.alias.is_routing:
            head.append((b"x-aisix-served-by", target.alias.encode()))
        await sink.send({"type": "http.response.start", "status": 200, "headers": head})
        ctx.status = 200  # only now: a head the server refused is still answered
        state.head_sent = True
        holds.partial = ctx.partial_usage
        if first:
            await send_chunk(sink.send, state, first)
        keepalive = Keepalive(sink.keepalive_s, sink.send, state)
        try:
            if relay.done:
                state.finished = True
                await sink.send({"type": "http.response.body", "body": relay.terminal()})
            else:
                await relay_rest(response, state, sink.send, stream_timeout_ms)
        finally:
            keepalive.stop()
        if relay.done:
            response.release()  # the connection may go back to the pool once the message ends
    units = media.units(call.body, None) if media is not None else None
    return Outcome(target, hold, stream=state, native=native, media=units)


def _answer(
    ctx: RequestContext,
    target: ModelEntry,
    upstream: Provider,
    inbound: InboundCodec,
    hold: Hold,
    parsed: dict[str, Any],
    native: bool,
    alias: str,
    request_body: dict[str, Any],
) -> Outcome:
    """A non-stream answer in the client's shape; a malformed one is a 502 here, inside the
    attempt, so it may fail over and its holds are released."""
    if isinstance(inbound, CountTokens):  # counting is free: nothing to settle
        return Outcome(target, hold, inbound.passthrough_answer(parsed, alias), Usage())
    if native:
        usage = upstream.codec.usage_of(parsed)
        body = inbound.passthrough_answer(parsed, alias)
        chars = answer_chars(body) if usage is None else 0
        return Outcome(target, hold, body, usage, chars, native=True)
    if isinstance(inbound, EmbeddingsInbound):
        embedder: Any = upstream.codec
        vectors = embedder.decode_embeddings(parsed)
        fmt = ctx.embedding_format
        return Outcome(target, hold, inbound.render_embeddings(vectors, alias, fmt), vectors.usage)
    response = upstream.codec.decode_response(parsed)
    body = inbound.render(response, alias, ctx.request_id, request_body)
    chars = len(response.message.text().encode())
    return Outcome(target, hold, body, response.usage, chars)


def answer_chars(answer: dict[str, Any]) -> int:
    """Bytes of text in an OpenAI-shaped answer (for an estimate when usage is missing)."""
    total = 0
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            total += len(text.encode())
    return total


__all__ = ["CallBody", "Outcome", "StreamSink", "dispatch", "upstream_timeouts"]
