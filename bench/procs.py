"""Process management for the benchmark harness.

Owns everything about child processes: starting them in their own session (so one signal
reaches a whole process tree), stopping them even on Ctrl-C or an error, finding free loopback
ports, polling readiness, and reading CPU time and RSS of a process tree from /proc.
Nothing here knows what the processes are; the callers (upstreams, targets) do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def raise_priority(nice: int) -> int:
    """Set this process's nice level (children inherit it) if allowed; return the level in use."""
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


@dataclass
class Managed:
    """One started child process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """Starts children in new sessions and guarantees they are all stopped."""

    log_dir: Path
    children: list[Managed] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        drop_env: Sequence[str] = (),
    ) -> Managed:
        """Start argv (optionally pinned to `cpus` with taskset); output goes to a log file.
        The child inherits this environment plus `env`, without the variables in `drop_env`."""
        full = ["taskset", "-c", cpus, *argv] if cpus else list(argv)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                full,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop_env},
                cwd=cwd,
            )
        managed = Managed(name, proc, log_path)
        self.children.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 5.0) -> None:
        """SIGTERM the child's whole process group, then SIGKILL after `grace` seconds."""
        _signal_group(managed.proc, signal.SIGTERM)
        try:
            managed.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(managed.proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.proc.wait(timeout=5)
        # workers may outlive their parent; the group kill covers them too
        _signal_group(managed.proc, signal.SIGKILL)
        if managed in self.children:
            self.children.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.children)):
            self.stop(managed, grace=3.0)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_http(
    url: str,
    timeout: float,
    *,
    alive: Managed | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    """Poll GET url until it answers 200, the deadline passes or `alive` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive.alive():
            return False
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(roots: Sequence[int]) -> list[int]:
    """Return roots plus all their living descendants."""
    kids = _children_map()
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(kids.get(pid, []))
    return seen


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """utime + stime of every living process in the trees, in seconds."""
    total = 0
    for pid in process_tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def tree_rss_mib(roots: Sequence[int]) -> float:
    """VmRSS summed over every living process in the trees, in MiB."""
    total_kib = 0
    for pid in process_tree(roots):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
                break
    return total_kib / 1024.0


def system_busy_seconds() -> float:
    """CPU time spent busy by the whole machine (all cores) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU time of this process, its living descendants and its waited-for children."""
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    waited = (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime
    return tree_cpu_seconds([os.getpid()]) + waited


class ForeignLoad:
    """Measures CPU used on this machine by processes that are not ours (other work)."""

    def __enter__(self) -> ForeignLoad:
        self.start = (time.monotonic(), system_busy_seconds(), own_cpu_seconds())
        self.share: float | None = None
        return self

    def __exit__(self, *_exc: object) -> None:
        wall0, busy0, own0 = self.start
        wall = time.monotonic() - wall0
        foreign = (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
        cpus = os.cpu_count() or 1
        self.share = round(max(0.0, foreign) / (wall * cpus), 3) if wall > 0 else None


def wait_quiet(max_wait: float, threshold: float = 0.1, window: float = 2.0) -> float | None:
    """Wait (at most max_wait s) until other processes use under `threshold` of all cores.

    Returns the last measured share. Used before each target so that a test suite running
    beside the benchmark does not silently spoil its figures.
    """
    deadline = time.monotonic() + max_wait
    share: float | None = None
    while True:
        with ForeignLoad() as load:
            time.sleep(window)
        share = load.share
        if share is None or share < threshold or time.monotonic() >= deadline:
            return share
