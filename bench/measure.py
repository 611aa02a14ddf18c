"""The measurement plan applied to one running target, and the profiles that size it.

`measure_target` runs, in order: warm-up, RSS idle, latency at concurrency 1, throughput at 50 and
200 connections, streaming throughput on the fixed SSE body, TTFT on that fixed stream (where
asked: the passthrough row and the adapter rows), TTFT and chunk gaps on the paced stream, then
N held slow streams with RSS sampled while they are open. The adapter rows have no paced
upstream of their family (it would be Python), so they stop after the fixed-stream TTFT.
`fixed_ttft_floor` probes each family's fixed stream on nginx directly. Every step is guarded:
a failure is recorded as `{"error": ...}` and the plan goes on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from families import FIXED_STREAMS
from load import LoadError, WrkRun, measured_wrk, run_probe, run_wrk
from procs import tree_rss_mib
from targets import Target


@dataclass(frozen=True)
class Profile:
    """Durations and counts of one run; `quick` is for smoke use."""

    name: str
    warmup_s: float
    latency_s: float
    load_s: float
    stream_load_s: float
    ttft_streams: int
    paced_chunks: int
    paced_interval_ms: int
    hold_streams: int
    slow_chunks: int
    slow_interval_ms: int
    scaling_s: float
    soak_s: float


FULL = Profile("full", 2, 10, 10, 8, 60, 10, 10, 1000, 8, 1000, 10, 600)
QUICK = Profile("quick", 1, 3, 3, 3, 20, 10, 10, 200, 4, 500, 3, 60)


def guarded(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement step; a failure becomes a recorded error, never a crash."""
    try:
        return step()
    except (LoadError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def fixed_ttft(
    url: str, model: str, key: str, fmt: str, profile: Profile, cpus: str | None
) -> dict[str, Any]:
    """Time to the first content chunk of nginx's fixed stream (all of it sent at once),
    `profile.ttft_streams` streams one after another."""
    return run_probe(
        "ttft", url, model, key, count=profile.ttft_streams, cpus=cpus, timeout=120, fmt=fmt
    )


def fixed_ttft_floor(nginx: str, profile: Profile, cpus: str | None) -> dict[str, Any]:
    """The direct floor of `fixed_ttft` for every family, reading each in its own format."""
    return {
        wire: guarded(partial(fixed_ttft, nginx + path, "direct", "upstream", wire, profile, cpus))
        for wire, path in FIXED_STREAMS.items()
    }


def measure_target(
    target: Target,
    profile: Profile,
    load_cpus: str | None,
    *,
    full_plan: bool = True,
    paced: bool = True,
    fixed_stream: bool = False,
) -> dict[str, Any]:
    """Run the measurement plan against one target and return its raw results: all of it,
    only latency and c=50 (`full_plan=False`), or without the paced steps (`paced=False`);
    `fixed_stream` adds the TTFT on the fixed stream."""
    roots = target.roots
    static_url, static_model = target.urls["static"], target.models["static"]

    def wrk(connections: int, seconds: float, *, kind: str = "static") -> dict[str, Any]:
        run = WrkRun(
            target.urls[kind],
            target.models[kind],
            target.key,
            connections,
            seconds,
            stream=kind == "sse",
        )
        return measured_wrk(run, roots, load_cpus)

    results: dict[str, Any] = {"info": target.info}
    warm = WrkRun(static_url, static_model, target.key, 8, profile.warmup_s)
    results["warmup"] = guarded(lambda: run_wrk(warm, load_cpus))
    results["rss_idle_mib"] = round(tree_rss_mib(roots), 1)
    results["latency_c1"] = guarded(lambda: wrk(1, profile.latency_s))
    results["load_c50"] = guarded(lambda: wrk(50, profile.load_s))
    if not full_plan:
        return results
    results["load_c200"] = guarded(lambda: wrk(200, profile.load_s))
    results["stream_load_c50"] = guarded(lambda: wrk(50, profile.stream_load_s, kind="sse"))
    if fixed_stream:
        results["stream_ttft_fixed"] = guarded(
            lambda: fixed_ttft(
                target.urls["sse"],
                target.models["sse"],
                target.key,
                target.stream_format,
                profile,
                load_cpus,
            )
        )
    if paced:
        paced_steps(target, profile, load_cpus, results)
    results["rss_after_mib"] = round(tree_rss_mib(roots), 1)
    exited = [m.name for m in target.processes if not m.alive()]
    if exited:
        results["exited_during_run"] = exited
    return results


def paced_steps(
    target: Target, profile: Profile, load_cpus: str | None, results: dict[str, Any]
) -> None:
    """TTFT and chunk gaps on the paced stream, then the held slow streams (into results)."""
    results["stream_ttft"] = guarded(
        lambda: run_probe(
            "ttft",
            target.urls["paced"],
            target.models["paced"],
            target.key,
            count=profile.ttft_streams,
            cpus=load_cpus,
            timeout=120,
        )
    )
    hold_timeout = profile.slow_chunks * profile.slow_interval_ms / 1000 + 30
    results["hold"] = guarded(
        lambda: run_probe(
            "hold",
            target.urls["slow"],
            target.models["slow"],
            target.key,
            count=profile.hold_streams,
            cpus=load_cpus,
            timeout=hold_timeout,
            pids=target.roots,
            warmup=0,
        )
    )
