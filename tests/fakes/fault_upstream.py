"""A misbehaving OpenAI-compatible upstream on a real socket, for the fault-injection suite.

`FaultUpstream().start()` accepts connections in a background thread; each request is answered
by the mode set with `fault = "<mode>"` (it stays until changed): `ok` (a good chat completion),
`reset_mid_body` (a 200 head and half a body, then a TCP reset), `garbage_status` (a status line
that is not HTTP), `truncated_json` (a 200 whose complete body is cut-off JSON), `stall_after_head`
(a 200 event-stream head, then nothing) and `never_answer` (the request is read, never answered).
Stalled connections are held until `stop()`, which closes every socket it opened.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Self

import orjson

MODES = (
    "ok",
    "reset_mid_body",
    "garbage_status",
    "truncated_json",
    "stall_after_head",
    "never_answer",
)

GOOD = orjson.dumps(
    {
        "id": "chatcmpl-fault-ok",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "fine"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
GOOD_STREAM = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"fine"},"finish_reason":null}]}'
    b"\n\n"
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


class FaultUpstream:
    """One listening socket; a thread per connection answers by the current `fault` mode."""

    def __init__(self) -> None:
        self.fault = "ok"
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        accept = threading.Thread(target=self._accept, name="fault-upstream", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            _close(sock)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                request = _read_request(sock)
                if request is None:
                    return
                self.requests += 1
                if not self._answer(sock, self.fault, b'"stream":true' in request):
                    return
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(sock)
            _close(sock)

    def _answer(self, sock: socket.socket, mode: str, stream: bool) -> bool:
        """Answer one request; False when the connection must not be reused."""
        if mode == "ok":
            if stream:
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(GOOD_STREAM) + GOOD_STREAM
                )
            else:
                sock.sendall(_json_head(len(GOOD)) + GOOD)
            return True
        if mode == "reset_mid_body":
            sock.sendall(_json_head(len(GOOD)) + GOOD[: len(GOOD) // 2])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False  # closing with linger 0 sends a RST
        if mode == "garbage_status":
            sock.sendall(b"HTTX/9.9 banana\r\n\r\n")
            return False
        if mode == "truncated_json":
            body = GOOD[: len(GOOD) - 20]
            sock.sendall(_json_head(len(body)) + body)
            return True
        if mode == "stall_after_head":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
        # stall_after_head and never_answer: hold the connection until the gateway gives up
        self._stopping.wait()
        return False


def _json_head(length: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )


def _read_request(sock: socket.socket) -> bytes | None:
    """One request (head and Content-Length body); None when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
