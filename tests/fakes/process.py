"""Starting and stopping the real server binaries the tests run (redis-server, etcd)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], name: str, deadline_s: float
) -> None:
    """Poll `ready` until it answers True; raise if the process exits or time runs out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        if ready():
            return
        time.sleep(0.03)
    terminate(proc)
    raise RuntimeError(f"{name} did not become ready within {deadline_s}s")


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
