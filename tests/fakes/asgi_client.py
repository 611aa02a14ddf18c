"""Drive an ASGI app in-process: build the scope, feed the body, collect the response.

No sockets and no framework: `AsgiClient.request` calls the app with an HTTP scope, a
`receive` that hands out the body in chunks and a `send` that records the status, headers
and body. Used by the admin API and resources-file tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error_msg"])


class AsgiClient:
    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        chunk_size: int = 1 << 20,
    ) -> Response:
        if json is not None:
            body = orjson.dumps(json)
        body = body or b""
        sent_headers = {"content-length": str(len(body))}
        if auth and self.token is not None:
            sent_headers["authorization"] = f"Bearer {self.token}"
        sent_headers.update(headers or {})
        parts = urlsplit(url)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent_headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 3001),
        }
        chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)] or [b""]
        received: list[Message] = []

        async def receive() -> Message:
            if chunks:
                chunk = chunks.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            received.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in received if m["type"] == "http.response.start")
        payload = b"".join(
            m.get("body", b"") for m in received if m["type"] == "http.response.body"
        )
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return Response(start["status"], response_headers, payload)

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> Response:
        return await self.request("PUT", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", url, **kwargs)
