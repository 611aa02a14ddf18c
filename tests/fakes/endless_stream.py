"""An OpenAI-compatible upstream whose chat streams never end, on a real socket.

`EndlessStream` runs an asyncio server in a background thread. Every request gets a 200
`text/event-stream` answer (chunked) that writes `chat.completion.chunk` frames of
`frame_bytes` of content for as long as the reader takes them, waiting for the socket to
drain (so it produces only what the gateway reads). It counts the streams open now and those
the gateway closed, which is how a test sees that an upstream connection was released.
"""

from __future__ import annotations

import asyncio
import threading

import orjson


class EndlessStream:
    def __init__(self, frame_bytes: int = 4096) -> None:
        self.frame = self._frame(frame_bytes)
        self.port = 0
        self.open_streams = 0
        self.started = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @staticmethod
    def _frame(size: int) -> bytes:
        chunk = {
            "id": "chatcmpl-endless",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": "x" * size}, "finish_reason": None}],
        }
        data = b"data: " + orjson.dumps(chunk) + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> tuple[int, int, int]:
        """(started, open now, closed by the client)."""
        with self._lock:
            return self.started, self.open_streams, self.closed

    def start(self) -> EndlessStream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="endless-stream", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_later(0.1, loop.stop)

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._thread = self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            with self._lock:
                self.started += 1
                self.open_streams += 1
            try:
                while True:
                    writer.write(self.frame)
                    await writer.drain()
            except (ConnectionError, OSError):
                with self._lock:
                    self.closed += 1
            finally:
                with self._lock:
                    self.open_streams -= 1
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
