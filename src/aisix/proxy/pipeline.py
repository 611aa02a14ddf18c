"""The model-endpoint pipeline (contract §6.3), from authentication to the usage event.

authenticate → read body (413) → parse (400) → resolve alias (404) → allowlist (403) →
`allowed_cidrs` (403) → candidates (403/503) → gate limits and budgets (429) → dispatch →
render → settle and emit. It reads one snapshot for the whole request, does no store I/O,
and finishes every counter it took exactly once, also when the client disconnects.
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
from aisix.events import Usage
from aisix.limits.governor import Hold, ratelimit_headers
from aisix.pricing import Estimate, cost_usd, estimate_request
from aisix.providers.base import Endpoint, usage_from_openai
from aisix.proxy.anthropic_in import message_id, parse_messages, to_chat, to_message
from aisix.proxy.auth import authenticate
from aisix.wire.request import parse_body
from aisix.proxy.client_ip import parse_ip
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.dispatch import SSE_HEADERS, Served, StreamSink, dispatch
from aisix.resources import DirectModel
from aisix.snapshot import ModelEntry

IP_RESTRICTED = "Access denied: your client IP is not allowed to access this model"


async def handle_model_call(
    rt: ProxyRuntime,
    ctx: RequestContext,
    endpoint: Endpoint,
    scope: Scope,
    receive: Receive,
    send: Send,
    common: Headers,
    anthropic: bool = False,
) -> None:
    """Serve one model call; errors before any byte was sent are raised to the caller.
    `anthropic`: an Anthropic Messages request, served through its chat translation."""
    snapshot = rt.holder.current
    if snapshot is None:
        raise ServiceUnavailable("gateway is not ready")
    ctx.snapshot = snapshot
    ctx.kind = endpoint
    ctx.key = authenticate(scope, snapshot, time.time())
    try:
        raw = await read_body(receive, scope, rt.settings.proxy.request_body_limit_bytes)
    except BodyTooLarge:
        limit = rt.settings.proxy.request_body_limit_bytes
        raise RequestTooLarge(f"request body exceeds {limit}-byte limit") from None
    body = to_chat(parse_messages(raw)) if anthropic else parse_body(raw, endpoint)
    ctx.stream = body.get("stream") is True
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
    est = estimate_request(
        body, rt.settings.ratelimit.estimate_completion_tokens, endpoint == "embeddings"
    )
    ctx.prompt_estimate = est.prompt_tokens
    gate = await rt.governor.admit_gate(snapshot, ctx.key, alias, est, candidates)
    ctx.open_holds.append(gate)
    head = common
    if endpoint == "chat" and not anthropic:
        head = [*head, (b"x-aisix-call-id", ctx.request_id.encode())]
    sink = None
    if ctx.stream:
        keepalive = rt.settings.downstream.sse_keepalive_interval_secs
        sink = StreamSink(send, SSE_HEADERS + head, keepalive, gate, anthropic)
    try:
        if sink is None:
            served = await dispatch(rt, ctx, candidates, endpoint, body, est, None)
        else:
            served = await _dispatch_watching(
                rt, ctx, candidates, endpoint, body, est, sink, receive
            )
    except GatewayError as err:
        ctx.open_holds.remove(gate)
        if err.reached_upstream:
            await gate.fail()
        else:
            await gate.rollback()
        raise
    ctx.open_holds.remove(gate)
    if served.body is not None:
        await _send_json_answer(ctx, send, served, head, gate, anthropic)
    await _settle(ctx, served, gate, est)


async def _dispatch_watching(
    rt: ProxyRuntime,
    ctx: RequestContext,
    candidates: list[ModelEntry],
    endpoint: Endpoint,
    body: dict[str, Any],
    est: Estimate,
    sink: StreamSink,
    receive: Receive,
) -> Served:
    """Dispatch a stream; a client disconnect cancels the upstream read promptly."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, ctx, task))
    try:
        return await dispatch(rt, ctx, candidates, endpoint, body, est, sink)
    finally:
        watcher.cancel()


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


async def finish_cancelled(ctx: RequestContext) -> None:
    """After a client disconnect: settle holds from what the stream saw, release the rest."""
    state = ctx.stream_state
    holds: list[Hold] = ctx.open_holds
    ctx.open_holds = []
    if state is None or not state.head_sent:
        for hold in holds:
            await hold.fail()
        return
    usage = state.usage or _estimated_usage(ctx, state.generated_chars)
    ctx.usage = usage
    ctx.cost_usd = _cost(ctx.served, usage)
    for hold in holds:
        await hold.settle(usage, ctx.cost_usd)


async def _send_json_answer(
    ctx: RequestContext, send: Send, served: Served, head: Headers, gate: Hold, anthropic: bool
) -> None:
    assert served.body is not None and ctx.alias is not None
    answer = served.body
    ctx.usage = usage_from_openai(answer.get("usage"))
    if anthropic:
        answer = to_message(answer, ctx.alias.alias, message_id(ctx.request_id))
    else:
        answer["model"] = ctx.alias.alias
    headers = JSON_HEADERS + head
    if ctx.alias.is_routing:
        headers = [*headers, (b"x-aisix-served-by", served.target.alias.encode())]
    headers += ratelimit_headers(gate, served.hold)
    ctx.status = 200
    await send_response(send, 200, orjson.dumps(answer), headers)


async def _settle(ctx: RequestContext, served: Served, gate: Hold, est: Estimate) -> None:
    stream = served.stream
    if stream is not None and stream.error is not None:
        ctx.error_type = stream.error.type
        ctx.error_code = stream.error.code
        usage = stream.usage or _estimated_usage(ctx, stream.generated_chars)
    elif stream is not None:
        usage = stream.usage or _estimated_usage(ctx, stream.generated_chars)
    else:
        usage = ctx.usage or _estimated_usage(ctx, _answer_chars(served.body))
    ctx.usage = usage
    ctx.cost_usd = _cost(served.target, usage)
    await served.hold.settle(usage, ctx.cost_usd)
    await gate.settle(usage, ctx.cost_usd)
    ctx.budget_warnings = [*gate.budget_warnings, *served.hold.budget_warnings]


def _estimated_usage(ctx: RequestContext, generated_bytes: int) -> Usage:
    body_prompt = ctx.prompt_estimate
    completion = -(-generated_bytes // 4)
    return Usage(body_prompt, completion, 0, body_prompt + completion, estimated=True)


def _answer_chars(answer: dict[str, Any] | None) -> int:
    total = 0
    for choice in (answer or {}).get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            total += len(text.encode())
    return total


def _cost(target: ModelEntry | None, usage: Usage) -> float:
    if target is None or not isinstance(target.value, DirectModel):
        return 0.0
    return cost_usd(target.value.pricing, usage)
