"""Bare proxy: the Python ceiling that aisix is compared against.

A raw ASGI callable on uvicorn (httptools + uvloop) forwarding `POST /v1/chat/completions` to an
upstream chosen by the request's `model`, through one pooled aiohttp `ClientSession`, with
orjson. It checks a bearer key against a set, rewrites `model`, relays non-streaming bodies
whole and streaming bodies chunk by chunk. No limits, no logging, no metrics: anything a real
gateway spends on top of this is its governance cost.
Run: python bench/bare_proxy.py --port 8001 --routes '{"bench-model": "http://127.0.0.1:9000/v1"}'
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
UPSTREAM_MODEL = "gpt-4o"


class BareProxy:
    """The ASGI app: a dict of model -> chat completions URL and one client session."""

    def __init__(self, routes: dict[str, str], keys: set[str]) -> None:
        self.urls = {
            model: base.rstrip("/") + "/chat/completions" for model, base in routes.items()
        }
        self.keys = {f"Bearer {key}".encode() for key in keys}
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            path = scope["path"]
            if path == "/v1/chat/completions" and scope["method"] == "POST":
                await self.chat(scope, receive, send)
            elif path in ("/readyz", "/livez"):
                await respond(send, 200, b"ok", [(b"content-type", b"text/plain")])
            else:
                await respond(send, 404, b'{"error":{"message":"not found"}}', JSON_HEADERS)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=60)
                self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if auth not in self.keys:
            await respond(send, 401, b'{"error":{"message":"bad key"}}', JSON_HEADERS)
            return
        payload = orjson.loads(await read_body(receive))
        url = self.urls.get(payload.get("model"))
        if url is None:
            await respond(send, 404, b'{"error":{"message":"unknown model"}}', JSON_HEADERS)
            return
        payload["model"] = UPSTREAM_MODEL
        assert self.session is not None
        headers = {"Authorization": "Bearer upstream", "Content-Type": "application/json"}
        async with self.session.post(url, data=orjson.dumps(payload), headers=headers) as resp:
            content_type = resp.headers.get("Content-Type", "application/json").encode()
            if not payload.get("stream"):
                await respond(
                    send, resp.status, await resp.read(), [(b"content-type", content_type)]
                )
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")],
                }
            )
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--routes", required=True, help="JSON object: model -> api_base")
    parser.add_argument("--key", action="append", default=[], help="accepted caller key")
    args = parser.parse_args()
    app = BareProxy(orjson.loads(args.routes), set(args.key) or {"bench-key"})
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
