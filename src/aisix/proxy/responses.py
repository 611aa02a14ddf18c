"""The Responses API around the pipeline: stored answers, `previous_response_id`, GET/DELETE.

Before dispatch a `previous_response_id` this gateway stored (for the same caller key) is
expanded into the input items, so any target can continue the conversation; an id it does
not know is left for a same-family target (the upstream stores its own) and refused on
translated paths. After a translated answer with `store` (the default) the response object
and the conversation items are kept in the `ResponseStore`. `GET`/`DELETE
/v1/responses/{id}` read and delete them, scoped to the key that made them (another key: 404).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from aisix.asgi import JSON_HEADERS, Headers, Scope, Send, send_response
from aisix.errors import GatewayError, ServiceUnavailable
from aisix.proxy.auth import authenticate
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.dispatch import Outcome
from aisix.responses_store import StoredResponse
from aisix.wire.responses import EventEncoder, input_items
from aisix.wire.translate import TranslatingRelay

PREFIX = "/v1/responses/"


class ResponseNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


async def expand_previous(
    rt: ProxyRuntime, ctx: RequestContext, body: dict[str, Any]
) -> dict[str, Any] | None:
    """The body to send upstream when `previous_response_id` names a response this gateway
    stored for the key: the stored conversation, then this call's input; None otherwise."""
    previous = body.get("previous_response_id")
    if not isinstance(previous, str) or rt.responses is None or ctx.key is None:
        return None
    stored = await rt.responses.get(previous, ctx.key.id)
    if stored is None:
        return None
    effective = {k: v for k, v in body.items() if k != "previous_response_id"}
    effective["input"] = [*stored.items, *input_items(body)]
    ctx.previous_response_id = previous
    return effective


def remember(
    rt: ProxyRuntime,
    ctx: RequestContext,
    outcome: Outcome,
    body: dict[str, Any],
    effective: dict[str, Any],
) -> None:
    """Keep a translated answer when the client asked to store it (`effective`: the input
    as sent, previous turns included)."""
    if rt.responses is None or ctx.key is None or body.get("store") is False or outcome.native:
        return
    response: dict[str, Any] | None = outcome.body
    stream = outcome.stream
    if stream is not None:
        if stream.error is not None or not isinstance(stream.relay, TranslatingRelay):
            return
        encoder = stream.relay.encoder
        response = encoder.finished_response() if isinstance(encoder, EventEncoder) else None
    if response is None or not isinstance(response.get("id"), str):
        return
    output = response.get("output")
    items = [*input_items(effective), *(output if isinstance(output, list) else ())]
    rt.responses.put(StoredResponse(response["id"], ctx.key.id, time.time(), response, items))


async def serve_stored(
    rt: ProxyRuntime, ctx: RequestContext, scope: Scope, send: Send, common: Headers, rid: str
) -> None:
    """`GET` (the response object) or `DELETE` (`{id, object, deleted}`) of a stored answer."""
    snapshot = rt.holder.current
    if snapshot is None:
        raise ServiceUnavailable("gateway is not ready")
    ctx.key = authenticate(scope, snapshot, time.time())
    missing = ResponseNotFound(f"Response with id '{rid}' not found.", param="response_id")
    if rt.responses is None:
        raise missing
    if ctx.method == "DELETE":
        if not await rt.responses.delete(rid, ctx.key.id):
            raise missing
        body: dict[str, Any] = {"id": rid, "object": "response.deleted", "deleted": True}
    else:
        stored = await rt.responses.get(rid, ctx.key.id)
        if stored is None:
            raise missing
        body = stored.response
    ctx.status = 200
    await send_response(send, 200, orjson.dumps(body), JSON_HEADERS, common)
