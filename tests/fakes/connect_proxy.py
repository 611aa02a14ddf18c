"""A small forward HTTP proxy on a real socket, the way squid or tinyproxy behave for us.

`ConnectProxy` answers `CONNECT host:port` with `200 Connection established` and then pipes
bytes both ways (the tunnel an https upstream is reached through), and forwards absolute-form
requests (`POST http://host:port/path HTTP/1.1`) to the origin in origin form without the
`Proxy-Authorization` header (plain-http upstreams). With `username`/`password` it demands
Basic proxy credentials (407 otherwise). It records every CONNECT authority, every forwarded
request line and the credentials each client presented.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from urllib.parse import urlsplit


class ConnectProxy:
    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self._expected = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.credentials: list[str | None] = []
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, headers = _parse(head)
            method, target, _ = line.split(" ", 2)
            auth = headers.get("proxy-authorization")
            self.credentials.append(auth)
            if self._expected is not None and auth != self._expected:
                self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="fake"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(head, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _tunnel(
        self, authority: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.tunnels.append(authority)
        host, _, port = authority.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _forward(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        line, _ = _parse(head)
        origin = urlsplit(line.split(" ", 2)[1])
        up_reader, up_writer = await asyncio.open_connection(origin.hostname, origin.port or 80)
        back = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            while True:  # one request at a time from this client connection, rewritten
                line, headers = _parse(head)
                method, target, version = line.split(" ", 2)
                self.forwarded.append(line)
                url = urlsplit(target)
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                kept = [
                    raw
                    for raw in head.split(b"\r\n")[1:]
                    if raw and not raw.lower().startswith(b"proxy-authorization:")
                ]
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length)
                up_writer.write(
                    f"{method} {path} {version}\r\n".encode()
                    + b"\r\n".join(kept)
                    + b"\r\n\r\n"
                    + body
                )
                await up_writer.drain()
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
        finally:
            up_writer.close()
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await back


def _parse(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for raw in lines[1:]:
        if ":" in raw:
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
