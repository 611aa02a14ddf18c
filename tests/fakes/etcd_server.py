"""A real single-member `etcd` (3.4, Debian `etcd-server`) on free ports for tests.

`EtcdServer(dir).start()` launches `/usr/bin/etcd` with its data dir inside `dir`, client and
peer URLs on 127.0.0.1, and waits (with a deadline) until `GET /health` answers healthy.
`stop()` terminates it (kill after a grace period); `start()` again reuses the same ports and
data, so a test can take etcd away and bring it back. `url` is `http://127.0.0.1:<port>`.
`put`/`get`/`delete` write keys directly through the v3 JSON gateway, as an operator would.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from fakes.process import terminate, wait_ready

START_DEADLINE_S = 15.0


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class EtcdServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.client_port = unused_port()
        self.peer_port = unused_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        assert self.proc is None, "etcd already running"
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        self.directory.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.directory / "etcd.log", "ab")  # noqa: SIM115 - owned by the process
        with log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--name=test",
                    f"--data-dir={self.directory / 'data'}",
                    f"--listen-client-urls={self.url}",
                    f"--advertise-client-urls={self.url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=test={peer}",
                    "--heartbeat-interval=20",
                    "--election-timeout=200",
                    "--logger=zap",
                    "--log-level=error",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_ready(self.proc, self.healthy, "etcd", START_DEADLINE_S)
        except RuntimeError as exc:
            self.proc = None
            raise RuntimeError(f"{exc}; see {self.directory / 'etcd.log'}") from None
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1.0) as resp:
                return bool(orjson.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None

    # -- direct key access (what an operator with etcdctl would do) ------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=orjson.dumps(body), method="POST")
        with urllib.request.urlopen(request, timeout=5.0) as resp:
            answer: dict[str, Any] = orjson.loads(resp.read())
        return answer

    def put(self, key: str, value: str | bytes) -> int:
        """Put one key; return the store revision after it."""
        answer = self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def get(self, key: str) -> dict[str, Any] | None:
        """The key's kv (value decoded to bytes, revisions as ints), or None."""
        kvs = self.call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return {
            "value": base64.b64decode(kv.get("value", "")),
            **{k: int(kv.get(k, 0)) for k in ("create_revision", "mod_revision", "version")},
        }

    def delete(self, key: str) -> int:
        answer = self.call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(answer.get("deleted", 0))
