"""The proxy listener's ASGI app: route table, health endpoints, error rendering, events.

A thin callable: one dict lookup routes a request; model endpoints go to the pipeline, and
every outcome is rendered here exactly once (OpenAI envelope on `/v1/*`, Anthropic envelope
on `/v1/messages*`). Every response carries `Server` and `x-aisix-request-id`; every request
publishes one `RequestFinished` event, which metrics and the access log consume.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable

import orjson

from aisix import __version__
from aisix.asgi import (
    JSON_HEADERS,
    TEXT_HEADERS,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    header,
    send_response,
    serve_lifespan,
)
from aisix.errors import GatewayError, NotImplementedByAdapter, ServiceUnavailable, UnknownRoute
from aisix.ids import uuid4_str
from aisix.providers.base import Endpoint
from aisix.proxy.auth import authenticate
from aisix.proxy.context import ProxyRuntime, RequestContext
from aisix.proxy.pipeline import finish_cancelled, handle_model_call

log = logging.getLogger("aisix.proxy")

SERVER_HEADER = (b"server", f"aisix/{__version__}".encode())
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
MODEL_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
ANTHROPIC_ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
#: endpoint label for metrics: route templates only, never raw paths
_ENDPOINT_LABEL = {
    **{path: path for path in MODEL_ROUTES},
    "/v1/models": "/v1/models",
    **{path: path for path in ANTHROPIC_ROUTES},
}


def request_id_of(scope: Scope) -> str:
    inbound = header(scope, b"x-request-id")
    if inbound is not None and _REQUEST_ID.match(inbound):
        return inbound.decode()
    return uuid4_str()


class ProxyApp:
    def __init__(self, rt: ProxyRuntime) -> None:
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await serve_lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/livez" or path == "/readyz":
            await self._health(path, send, request_id_of(scope))
            return
        request_id = request_id_of(scope)
        rt = self.rt
        ctx = RequestContext(
            request_id=request_id,
            endpoint=_ENDPOINT_LABEL.get(path, "other"),
            method=scope["method"],
            path=path,
            client_ip=rt.client_ip.resolve(scope),
        )
        common: Headers = [SERVER_HEADER, (b"x-aisix-request-id", request_id.encode())]
        rt.in_flight += 1
        try:
            await self._route(ctx, scope, receive, send, common)
        except GatewayError as err:
            await self._render_error(ctx, err, send, common, path in ANTHROPIC_ROUTES)
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
            await finish_cancelled(ctx)
            # 499 when nothing was sent; after a streamed head the status stays 200
            ctx.status = ctx.status or 499
            ctx.error_type = "client_gone"
        except Exception:
            log.exception("unhandled error serving %s", path)
            for hold in ctx.open_holds:  # a bug must not leak counters or slots
                await hold.fail()
            ctx.open_holds.clear()
            if not ctx.status:
                internal = GatewayError("internal gateway error")
                await self._render_error(ctx, internal, send, common, path in ANTHROPIC_ROUTES)
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
        endpoint = MODEL_ROUTES.get(path)
        if endpoint is not None:
            if ctx.method != "POST":
                raise UnknownRoute(f"method {ctx.method} not allowed on {path}", status=405)
            return handle_model_call(self.rt, ctx, endpoint, scope, receive, send, common)
        if path == "/v1/models":
            if ctx.method != "GET":
                raise UnknownRoute(f"method {ctx.method} not allowed on {path}", status=405)
            return self._list_models(ctx, scope, send, common)
        if path == "/v1/messages":
            if ctx.method != "POST":
                raise UnknownRoute(f"method {ctx.method} not allowed on {path}", status=405)
            return handle_model_call(self.rt, ctx, "chat", scope, receive, send, common, True)
        if path in ANTHROPIC_ROUTES:
            raise NotImplementedByAdapter("count_tokens is served for Anthropic targets only")
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
            {
                "id": model.alias,
                "object": "model",
                "created": created,
                "owned_by": getattr(model.value, "provider", ""),
            }
            for model in snapshot.listable_models
            if key.allowlist.allows(model.alias)
        ]
        ctx.status = 200
        body = orjson.dumps({"object": "list", "data": data})
        await send_response(send, 200, body, JSON_HEADERS, common)

    async def _render_error(
        self,
        ctx: RequestContext,
        err: GatewayError,
        send: Send,
        common: Headers,
        anthropic: bool,
    ) -> None:
        ctx.status = err.status
        ctx.error_type = err.type
        ctx.error_code = err.code
        body = err.anthropic_body() if anthropic else err.openai_body()
        headers = JSON_HEADERS + common
        if err.headers:
            headers = headers + [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        await send_response(send, err.status, body, headers)

    async def _health(self, path: str, send: Send, request_id: str) -> None:
        rt = self.rt
        if rt.draining:
            status, body = 503, b"draining" if path == "/livez" else b"not ready"
        elif path == "/readyz" and rt.holder.current is None:
            status, body = 503, b"not ready"
        else:
            status, body = 200, b"ok"
        headers = [*TEXT_HEADERS, SERVER_HEADER, (b"x-aisix-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
