"""A real `redis-server` on a free port for tests: no persistence, data dir in tmp_path.

`RedisServer(dir).start()` launches it and waits (with a deadline) until it answers
PING; `stop()` terminates it (kill after a grace period). `url` is `redis://127.0.0.1:<port>/0`.
`RedisServer(dir, sentinel_for=master)` runs the same binary as a sentinel monitoring `master`
under the name `mymaster`. Shared by the counter-backend and client integration tests and the
two-gateway e2e test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from fakes.process import terminate, wait_ready

START_DEADLINE_S = 10.0


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        sentinel_for: RedisServer | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or unused_port()
        self.extra_args = extra_args
        self.sentinel_for = sentinel_for
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.directory.mkdir(parents=True, exist_ok=True)
        head: list[str] = [binary]
        if self.sentinel_for is not None:  # a sentinel needs a writable config file
            conf = self.directory / "sentinel.conf"
            master = self.sentinel_for.port
            conf.write_text(f"sentinel monitor mymaster 127.0.0.1 {master} 1\n")
            head += [str(conf), "--sentinel"]
        self.proc = subprocess.Popen(
            [
                *head,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.proc, self.ping, "redis-server", START_DEADLINE_S)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None
