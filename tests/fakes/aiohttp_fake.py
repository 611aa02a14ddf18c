"""The thread and event loop every aiohttp fake upstream runs on.

`AiohttpFake.start()` serves an aiohttp app on a real socket (HTTP, or HTTPS with `tls`) from
a daemon thread with its own event loop and returns once the port is bound; `stop()` drops
open connections, shuts the app down, closes the loop and joins the thread, so no socket or
loop is left to the garbage collector. It is a context manager. Subclasses add their
routes in `routes` (by default every method and path goes to `_handle`).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Self

from aiohttp import web

#: request bodies the fakes accept (uploads, large prompts)
CLIENT_MAX_SIZE = 64 * 1024 * 1024


class AiohttpFake:
    """One aiohttp server in its own thread; see the module docstring."""

    #: the thread's name, in tracebacks and thread dumps
    name = "fake-upstream"
    backlog = 2048

    def __init__(self, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls  # serve HTTPS with this server context
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Root URL without a path, e.g. `http://127.0.0.1:41234`."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def start(self) -> Self:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self._serve())
                except BaseException as exc:  # reported to start()
                    errors.append(exc)
                    return
                finally:
                    started.set()
                loop.run_forever()
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not started.wait(10) or errors:
            raise RuntimeError(f"{self.name} failed to start: {errors}")
        return self

    def stop(self) -> None:
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(_shutdown(runner), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=self.backlog, ssl_context=self.tls)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]


async def _shutdown(runner: web.AppRunner) -> None:
    """Drop every open connection, then stop the app: a TLS connection closed politely waits
    for the client's close_notify (up to 30 s), which a pooled client never sends; the loop
    would then close with its socket still open."""
    server = runner.server
    for handler in list(server.connections) if server is not None else []:
        transport = handler.transport
        if transport is not None:
            transport.abort()
    await runner.cleanup()
