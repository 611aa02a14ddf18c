"""Load generation and per-run measurement.

Runs wrk (C, epoll) with bench/wrk/chat.lua for request latency and throughput, and
bench/stream_probe.py for streaming timings and held streams. Around each wrk run it reads the
target's process-tree CPU time (utime+stime from /proc) and samples its RSS, so every result
carries requests/s, CPU-seconds per 1,000 requests and RSS under load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fixtures import request_body
from procs import ForeignLoad, tree_cpu_seconds, tree_rss_mib
from upstreams import BENCH_DIR

WRK_SCRIPT = BENCH_DIR / "wrk" / "chat.lua"


class LoadError(RuntimeError):
    """The load generator failed or printed no result."""


def _pinned(argv: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class RssSampler:
    """Samples tree RSS every `interval` seconds in a thread; keeps peak and samples."""

    def __init__(self, roots: Sequence[int], interval: float = 0.25) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - start, tree_rss_mib(self.roots)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float | None:
        return max((rss for _, rss in self.samples), default=None)


@dataclass(frozen=True)
class WrkRun:
    """One wrk invocation."""

    url: str
    model: str
    key: str
    connections: int
    seconds: float
    stream: bool = False
    threads: int = 1


def run_wrk(run: WrkRun, cpus: str | None) -> dict[str, Any]:
    """Run wrk and return the JSON that chat.lua's done() printed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise LoadError("wrk not found (apt-get install -y wrk)")
    argv = [
        wrk,
        f"-t{run.threads}",
        f"-c{run.connections}",
        f"-d{max(1, round(run.seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        run.url,
    ]
    env = {"BENCH_BODY": request_body(run.model, stream=run.stream), "BENCH_KEY": run.key}
    proc = subprocess.run(
        _pinned(argv, cpus),
        capture_output=True,
        text=True,
        timeout=run.seconds + 60,
        env={**os.environ, **env},
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise LoadError(f"wrk printed no result (rc {proc.returncode}): {proc.stderr[-300:]}")


def measured_wrk(run: WrkRun, roots: Sequence[int], cpus: str | None) -> dict[str, Any]:
    """wrk plus CPU-seconds and RSS of the target tree; adds rps and cpu_s_per_1k."""
    cpu_before = tree_cpu_seconds(roots)
    with ForeignLoad() as foreign, RssSampler(roots) as sampler:
        result = run_wrk(run, cpus)
    cpu = tree_cpu_seconds(roots) - cpu_before
    errors = result["errors"]
    failed = errors["status"] + errors["timeout"] + errors["connect"] + errors["read"]
    ok = max(0, result["requests"] - errors["status"])
    seconds = result["duration_us"] / 1e6
    result.update(
        connections=run.connections,
        rps=round(ok / seconds, 1) if seconds else 0.0,
        failed=failed,
        cpu_seconds=round(cpu, 3),
        cpu_s_per_1k=round(cpu / ok * 1000, 4) if ok else None,
        rps_per_cpu_s=round(ok / cpu, 1) if cpu else None,
        rss_peak_mib=round(sampler.peak or 0.0, 1),
        foreign_cpu_share=foreign.share,
    )
    return result


def run_probe(
    mode: str,
    url: str,
    model: str,
    key: str,
    *,
    count: int,
    cpus: str | None,
    timeout: float,
    pids: Sequence[int] = (),
    warmup: int = 5,
    fmt: str = "openai",
) -> dict[str, Any]:
    """Run stream_probe.py in a subprocess and return its JSON; `fmt` is the stream format
    the probe reads (openai, anthropic, gemini, bedrock)."""
    argv = [
        sys.executable,
        str(BENCH_DIR / "stream_probe.py"),
        mode,
        "--url",
        url,
        "--model",
        model,
        "--key",
        key,
        "--count",
        str(count),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--format",
        fmt,
    ]
    for pid in pids:
        argv += ["--pid", str(pid)]
    proc = subprocess.run(
        _pinned(argv, cpus), capture_output=True, text=True, timeout=timeout + 60, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise LoadError(f"stream probe failed (rc {proc.returncode}): {proc.stderr[-400:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
