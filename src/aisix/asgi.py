"""Minimal ASGI plumbing shared by the proxy, admin and status listeners.

No framework: a listener is an ASGI callable with a dict route table. These helpers read a
request body under a byte limit, send a complete response, and read headers from the scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
TEXT_HEADERS: Headers = [(b"content-type", b"text/plain; charset=utf-8")]


class BodyTooLarge(Exception):
    """The request body exceeded the configured limit."""


class ClientGone(Exception):
    """The client disconnected before the body was read."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a (lowercase) request header, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def declared_length(scope: Scope, limit: int) -> int | None:
    """The request's Content-Length (None: absent or not a number); BodyTooLarge when it
    declares more than `limit` bytes (0 = no limit)."""
    declared = header(scope, b"content-length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if limit and length is not None and length > limit:
        raise BodyTooLarge
    return length


def body_part(message: Message, size: int, limit: int) -> tuple[bytes, int, bool]:
    """One received message of the body: (its bytes, the body's size so far, whether more
    follows). ClientGone on a disconnect, BodyTooLarge once the size passes `limit`."""
    if message["type"] == "http.disconnect":
        raise ClientGone
    chunk: bytes = message.get("body", b"")
    size += len(chunk)
    if limit and size > limit:
        raise BodyTooLarge
    return chunk, size, message.get("more_body", False)


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """Read the whole body; raise BodyTooLarge past `limit` bytes (0 = no limit)."""
    if limit:
        declared_length(scope, limit)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        chunk, size, more = body_part(await receive(), size, limit)
        if chunk:
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(
    send: Send, status: int, body: bytes, headers: Headers, extra: Headers | None = None
) -> None:
    """Send a complete response with an explicit Content-Length (no chunked encoding)."""
    all_headers = headers + extra if extra else list(headers)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan scope; the listeners own no startup or shutdown work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
