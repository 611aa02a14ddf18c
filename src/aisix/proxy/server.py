"""The proxy listener's ASGI app: route table, health endpoints, error rendering, events.

A thin callable: one dict lookup maps a path to its inbound codec (OpenAI chat, completions,
embeddings, images, audio, moderations, rerank, Anthropic Messages, Responses), and the
pipeline serves it; every outcome is rendered here
exactly once, in that codec's error envelope. Every response carries `Server`,
`x-aisix-request-id` and its SDK-facing copies (`x-request-id`, `request-id`); every request
publishes one `RequestFinished` event, which metrics and the access log consume. The request
id comes from the first acceptable `proxy.request_id.accept_headers` value; `proxy.url_rewrites`
rewrite the raw path once, before routing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from urllib.parse import unquote

import orjson

from aisix import __version__, redact
from aisix.asgi import (
    JSON_HEADERS,
    TEXT_HEADERS,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    send_response,
    serve_lifespan,
)
from aisix.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    UnknownRoute,
)
from aisix.ids import uuid4_str
from aisix.listener import Refusal
from aisix.obs import health
from aisix.proxy.auth import authenticate
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.passthrough import PREFIX as PASSTHROUGH_PREFIX
from aisix.proxy.passthrough import serve_passthrough
from aisix.proxy.pipeline import handle_model_call
from aisix.proxy.responses import PREFIX as RESPONSES_PREFIX
from aisix.proxy.responses import serve_stored
from aisix.settings_compat import RewriteTemplate
from aisix.snapshot import ModelEntry
from aisix.wire.anthropic import COUNT_TOKENS, MESSAGES
from aisix.wire.base import InboundCodec
from aisix.wire.openai_in import CHAT, COMPLETIONS, EMBEDDINGS
from aisix.wire.openai_media import MEDIA_ROUTES
from aisix.wire.responses import RESPONSES

log = logging.getLogger("aisix.proxy")

SERVER_HEADER = (b"server", f"aisix/{__version__}".encode())
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
#: model routes: path → the inbound codec that parses, renders and answers errors for it
MODEL_ROUTES: dict[str, InboundCodec] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": COUNT_TOKENS,
    "/v1/responses": RESPONSES,
    **MEDIA_ROUTES,
}
#: routes that answer in an inbound codec's envelope without being model calls
ENVELOPES: dict[str, InboundCodec] = {**MODEL_ROUTES}
MODELS_PREFIX = "/v1/models/"
#: endpoint label for metrics: route templates only, never raw paths
_ENDPOINT_LABEL = {
    **{path: path for path in ENVELOPES},
    "/v1/models": "/v1/models",
}


def scan_headers(scope: Scope, accepted: tuple[bytes, ...]) -> tuple[str, bytes | None]:
    """One pass over the headers: the request id (the acceptable value of the earliest
    `accepted` header, else a fresh UUID) and the User-Agent."""
    user_agent: bytes | None = None
    found: bytes | None = None
    rank = len(accepted)
    for key, value in scope["headers"]:
        if key == b"user-agent":
            if user_agent is None:
                user_agent = value
        elif rank and key in accepted:
            position = accepted.index(key)
            if position < rank and _REQUEST_ID.match(value):
                found, rank = value, position
    return (found.decode() if found is not None else uuid4_str()), user_agent


def rewrite_path(scope: Scope, rules: tuple[tuple[re.Pattern[str], RewriteTemplate], ...]) -> str:
    """Apply the first matching `proxy.url_rewrites` rule to the raw path (query kept)."""
    raw_path = scope.get("raw_path")
    raw = raw_path.decode("latin-1") if raw_path else scope["path"]
    for pattern, template in rules:
        match = pattern.search(raw)
        if match is not None:
            rewritten = raw[: match.start()] + template.expand(match) + raw[match.end() :]
            scope["raw_path"] = rewritten.encode("latin-1")
            scope["path"] = unquote(rewritten)
            break
    return str(scope["path"])


class ProxyApp:
    def __init__(self, rt: ProxyRuntime) -> None:
        self.rt = rt
        proxy = rt.settings.proxy
        self.request_id_headers = tuple(h.encode() for h in proxy.request_id.accept_headers)
        self.rewrites = tuple(rule.compiled() for rule in proxy.url_rewrites)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await serve_lifespan(receive, send)
            return
        path: str = rewrite_path(scope, self.rewrites) if self.rewrites else scope["path"]
        if (path == "/livez" or path == "/readyz") and scope["method"] in ("GET", "HEAD"):
            await self._health(path, scope, send, scan_headers(scope, self.request_id_headers)[0])
            return
        request_id, user_agent = scan_headers(scope, self.request_id_headers)
        rt = self.rt
        label = _ENDPOINT_LABEL.get(path)
        if label is None:
            if path.startswith(MODELS_PREFIX):
                label = "/v1/models/{id}"
            elif path.startswith(RESPONSES_PREFIX):
                label = "/v1/responses/{id}"
            elif path.startswith(PASSTHROUGH_PREFIX):
                label = "/passthrough/{provider_key}"
            else:
                label = "other"
        ctx = RequestContext(
            request_id=request_id,
            endpoint=label,
            method=scope["method"],
            path=path,
            client_ip=rt.client_ip.resolve(scope),
        )
        ctx.user_agent = user_agent
        rid = request_id.encode()
        common: Headers = [
            SERVER_HEADER,
            (b"x-aisix-request-id", rid),
            (b"x-request-id", rid),
            (b"request-id", rid),
        ]
        envelope = ENVELOPES.get(path, CHAT)
        rt.in_flight += 1
        try:
            await self._route(ctx, scope, receive, send, common)
        except GatewayError as err:
            await self._render_error(ctx, err, send, common, envelope)
        except ClientGone:
            ctx.client_cancelled = True
            ctx.status = 499
            ctx.error_type = "client_gone"
        except asyncio.CancelledError:
            if not ctx.client_cancelled:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # the request's reservations settled (streamed head) or released its holds;
            # 499 when nothing was sent; after a streamed head the status stays 200
            ctx.status = ctx.status or 499
            ctx.error_type = "client_gone"
        except Exception:
            # a bug: the reservations released every hold on the way out
            log.exception("unhandled error serving %s", path)
            if not ctx.status:
                internal = GatewayError("internal gateway error")
                await self._render_error(ctx, internal, send, common, envelope)
        finally:
            rt.in_flight -= 1
            ctx.ended = time.perf_counter()
            rt.bus.publish_deferred(ctx.finished)

    def _route(
        self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send, common: Headers
    ) -> Awaitable[None]:
        """The handler coroutine for this request (returned, not awaited: one frame less on
        every resume of the request task)."""
        path = ctx.path
        if path == "/livez" or path == "/readyz":
            _allow(ctx, "GET")  # GET and HEAD are answered before routing; the rest is 405
        inbound = MODEL_ROUTES.get(path)
        if inbound is not None:
            _allow(ctx, "POST")
            return handle_model_call(self.rt, ctx, inbound, scope, receive, send, common)
        if path == "/v1/models":
            _allow(ctx, "GET")
            return self._list_models(ctx, scope, send, common)
        if path.startswith(MODELS_PREFIX) and len(path) > len(MODELS_PREFIX):
            _allow(ctx, "GET")
            return self._get_model(ctx, scope, send, common, path[len(MODELS_PREFIX) :])
        if path.startswith(RESPONSES_PREFIX) and len(path) > len(RESPONSES_PREFIX):
            if ctx.method not in ("GET", "DELETE"):
                raise UnknownRoute(
                    f"method {ctx.method} not allowed on {path}",
                    status=405,
                    headers={"Allow": "GET, DELETE"},
                )
            rid = path[len(RESPONSES_PREFIX) :]
            return serve_stored(self.rt, ctx, scope, send, common, rid)
        if path.startswith(PASSTHROUGH_PREFIX):
            return serve_passthrough(self.rt, ctx, scope, receive, send, common)
        raise UnknownRoute(f"unknown route {ctx.method} {path}")

    async def _list_models(
        self, ctx: RequestContext, scope: Scope, send: Send, common: Headers
    ) -> None:
        snapshot = self.rt.holder.current
        if snapshot is None:
            raise ServiceUnavailable("gateway is not ready")
        key = authenticate(scope, snapshot, time.time())
        ctx.key = key
        created = int(time.time())
        data = [
            _model_object(model, created)
            for model in snapshot.listable_models
            if key.allowlist.allows(model.alias)
        ]
        ctx.status = 200
        body = orjson.dumps({"object": "list", "data": data})
        await send_response(send, 200, body, JSON_HEADERS, common)

    async def _get_model(
        self, ctx: RequestContext, scope: Scope, send: Send, common: Headers, alias: str
    ) -> None:
        """`GET /v1/models/{alias}`: the model object for an alias the key may list."""
        snapshot = self.rt.holder.current
        if snapshot is None:
            raise ServiceUnavailable("gateway is not ready")
        key = authenticate(scope, snapshot, time.time())
        ctx.key = key
        model = snapshot.models_by_alias.get(alias)
        if model is None or model.is_routing or not key.allowlist.allows(alias):
            raise ModelNotFound(f'model "{alias}" not found')
        ctx.status = 200
        body = orjson.dumps(_model_object(model, int(time.time())))
        await send_response(send, 200, body, JSON_HEADERS, common)

    async def _render_error(
        self,
        ctx: RequestContext,
        err: GatewayError,
        send: Send,
        common: Headers,
        envelope: InboundCodec,
    ) -> None:
        ctx.status = err.status
        ctx.error_type = err.type
        ctx.error_code = err.code
        if err.reached_upstream:  # its text may quote the upstream: no provider secret leaves
            err.message = redact.current().redact(err.message)
        body = envelope.error_body(err)
        headers = JSON_HEADERS + common
        if err.headers:
            headers = headers + [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        await send_response(send, err.status, body, headers)

    async def _health(self, path: str, scope: Scope, send: Send, request_id: str) -> None:
        rt = self.rt
        status, body = health.answer(path, scope, rt.draining, rt.holder.current is not None)
        rid = request_id.encode()
        headers = [
            *TEXT_HEADERS,
            SERVER_HEADER,
            (b"x-aisix-request-id", rid),
            (b"x-request-id", rid),
            (b"request-id", rid),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def render_refusal(refusal: Refusal) -> tuple[bytes, Headers]:
    """A server-level refusal (parse error, listener limit) in the envelope of the path's
    inbound codec (OpenAI unless the path is an Anthropic route), with the common headers."""
    err: GatewayError
    if refusal.status >= 500:
        err = ServiceUnavailable(refusal.message, code=refusal.code, status=refusal.status)
    elif refusal.code == "unknown_route":
        err = UnknownRoute(refusal.message, status=refusal.status)
    else:
        err = InvalidRequest(refusal.message, code=refusal.code, status=refusal.status)
    envelope = ENVELOPES.get(refusal.path or "", CHAT)
    rid = uuid4_str().encode()
    headers: Headers = [
        *JSON_HEADERS,
        SERVER_HEADER,
        (b"x-aisix-request-id", rid),
        (b"x-request-id", rid),
        (b"request-id", rid),
    ]
    return envelope.error_body(err), headers


def _allow(ctx: RequestContext, method: str) -> None:
    if ctx.method != method:
        raise UnknownRoute(
            f"method {ctx.method} not allowed on {ctx.path}", status=405, headers={"Allow": method}
        )


def _model_object(model: ModelEntry, created: int) -> dict[str, object]:
    return {
        "id": model.alias,
        "object": "model",
        "created": created,
        "owned_by": model.direct.provider if model.direct is not None else "",
    }
