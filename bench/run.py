"""Benchmark orchestrator: `python bench/run.py [--quick] [--soak]`.

Starts the upstreams (nginx, paced SSE server), then each target in turn on the same upstreams
(direct, bare proxy, aisix governance off/on, aisix on Redis counters, aisix with another wire
family behind it: Anthropic native and translated, Gemini, Bedrock; LiteLLM), measures it
(bench/measure.py), stops it, and finally measures `proxy.workers` 1 vs 2. Writes
bench/results/results.json, bench/RESULTS.md and bench/results/chart.png. Every process it
starts is stopped on exit, Ctrl-C or error. `--soak` instead runs the 10-minute soak on aisix;
`--profile TARGET` instead records a py-spy profile of one target under load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from families import FAMILIES
from hotpath import profile_target
from load import RssSampler, WrkRun, measured_wrk
from measure import FULL, QUICK, Profile, fixed_ttft_floor, measure_target
from procs import ProcessGroup, raise_fd_limit, raise_priority, tree_cpu_seconds, wait_quiet
from report import write_outputs
from targets import (
    ALIASES,
    ROUTED_ALIAS,
    AisixVariant,
    Target,
    UpstreamBases,
    direct_target,
    start_aisix,
    start_bare,
    start_litellm,
)
from upstreams import BENCH_DIR, StartError, start_nginx, start_paced, start_redis
from venvs import LITELLM_VENV, LITELLM_VERSION, ensure_litellm

RESULTS_DIR = BENCH_DIR / "results"
TARGET_CPUS = "0"  # the target under test owns core 0 ...
LOAD_CPUS = "1"  # ... upstreams, wrk and probes share core 1
ALL_CPUS = "0,1"  # the workers-scaling step pins nothing
# the harness and everything it starts run at this nice level, so that other work on a
# shared machine disturbs the figures less (root only; otherwise the level is unchanged)
PRIORITY = -10
ALL_TARGETS = (
    "direct",
    "bare",
    "aisix-off",
    "aisix-gov",
    "aisix-gov-redis",
    *FAMILIES,
    "litellm",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _terminate(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


class Run:
    """State of one harness run: process group, upstreams, results."""

    def __init__(self, profile: Profile, workdir: Path, group: ProcessGroup) -> None:
        self.profile = profile
        self.workdir = workdir
        self.group = group
        self.results: dict[str, Any] = {"targets": {}, "skipped": {}}
        self.redis_url: str | None = None
        self.redis_error: str | None = None
        self.wait_quiet = 0.0
        nginx = start_nginx(self.group, workdir, LOAD_CPUS)
        paced = start_paced(self.group, LOAD_CPUS)
        self.upstream_procs = [nginx.managed]
        self.nginx = nginx
        p = profile
        self.bases = UpstreamBases(
            static=f"{nginx.root}/v1",
            sse=f"{nginx.root}/stream/v1",
            paced=f"{paced.root}/p/{p.paced_chunks}/{p.paced_interval_ms}/v1",
            slow=f"{paced.root}/p/{p.slow_chunks}/{p.slow_interval_ms}/v1",
            nginx=nginx.root,
        )

    def redis(self) -> str:
        """Start redis-server on first use; raise StartError if it cannot run."""
        if self.redis_url is None and self.redis_error is None:
            try:
                _, self.redis_url = start_redis(self.group, self.workdir, LOAD_CPUS)
            except StartError as exc:
                self.redis_error = str(exc)
        if self.redis_url is None:
            raise StartError(f"redis unavailable: {self.redis_error}")
        return self.redis_url

    def starter(self, name: str, cpus: str | None) -> Callable[[], Target]:
        group, bases, workdir = self.group, self.bases, self.workdir
        starters: dict[str, Callable[[], Target]] = {
            "direct": lambda: direct_target(bases, self.upstream_procs),
            "bare": lambda: start_bare(group, bases, cpus),
            "aisix-off": lambda: start_aisix(
                group, bases, AisixVariant("off", governance=False), workdir, cpus
            ),
            "aisix-gov": lambda: start_aisix(
                group, bases, AisixVariant("gov", governance=True), workdir, cpus
            ),
            "aisix-gov-redis": lambda: start_aisix(
                group, bases, AisixVariant("gov-redis", True, redis_url=self.redis()), workdir, cpus
            ),
            "litellm": lambda: start_litellm(group, bases, LITELLM_VENV, workdir, cpus),
        }
        if name in FAMILIES:
            family = FAMILIES[name]
            missing = self.nginx.missing.get(family.wire)
            if missing:
                raise StartError(missing)
            variant = AisixVariant(name.removeprefix("aisix-"), governance=True)
            return lambda: start_aisix(group, bases, variant, workdir, cpus, family)
        return starters[name]

    def quiet(self) -> None:
        """Wait for the machine to be quiet, if --wait-quiet asks for it."""
        if self.wait_quiet > 0:
            share = wait_quiet(self.wait_quiet)
            if share is not None and share >= 0.1:
                log(f"machine still busy ({share:.0%} of all cores used by others); measuring")

    def measure(self, name: str) -> None:
        self.quiet()
        log(f"target {name}: starting")
        try:
            target = self.starter(name, TARGET_CPUS)()
        except StartError as exc:
            log(f"target {name}: skipped: {exc}")
            self.results["skipped"][name] = str(exc)
            return
        try:
            log(f"target {name}: measuring")
            results = measure_target(
                target,
                self.profile,
                LOAD_CPUS,
                paced=name not in FAMILIES,
                fixed_stream=name == "aisix-gov" or name in FAMILIES,
            )
            if name == "direct":
                results["fixed_ttft"] = fixed_ttft_floor(self.nginx.root, self.profile, LOAD_CPUS)
            if name == "aisix-gov":
                results["routed"] = self.measure_routed(target)
            self.results["targets"][name] = results
        finally:
            for managed in target.processes:
                if managed not in self.upstream_procs:
                    self.group.stop(managed)
        log(f"target {name}: done")

    def measure_routed(self, target: Target) -> dict[str, Any]:
        """Latency and throughput through the failover routing alias, if it was created."""
        if target.info.get("routing_alias") != "ok":
            return {"error": str(target.info.get("routing_alias"))}
        routed = Target(
            target.name + "-routed",
            target.urls,
            {**target.models, "static": ROUTED_ALIAS},
            target.key,
            target.processes,
        )
        return measure_target(routed, self.profile, LOAD_CPUS, full_plan=False)

    def scaling(self) -> dict[str, Any]:
        """Throughput per CPU-second with proxy.workers 1 and 2 (Redis counters, unpinned)."""
        out: dict[str, Any] = {}
        for workers in (1, 2):
            name = f"workers-{workers}"
            self.quiet()
            log(f"scaling {name}: starting")
            try:
                variant = AisixVariant(name, True, redis_url=self.redis(), workers=workers)
                target = start_aisix(self.group, self.bases, variant, self.workdir, ALL_CPUS)
            except StartError as exc:
                out[name] = {"error": str(exc)}
                continue
            try:
                warm = WrkRun(target.urls["static"], ALIASES["static"], target.key, 8, 2)
                measured_wrk(warm, target.roots, ALL_CPUS)
                run = WrkRun(
                    target.urls["static"],
                    ALIASES["static"],
                    target.key,
                    200,
                    self.profile.scaling_s,
                )
                out[name] = measured_wrk(run, target.roots, ALL_CPUS)
            except (OSError, ValueError, RuntimeError) as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                for managed in target.processes:
                    self.group.stop(managed)
        return out

    def soak(self) -> dict[str, Any]:
        """Fixed load (50 connections) on aisix-gov for profile.soak_s; RSS growth in MiB/min."""
        target = start_aisix(
            self.group, self.bases, AisixVariant("soak", True), self.workdir, TARGET_CPUS
        )
        seconds = self.profile.soak_s
        log(f"soak: {seconds:.0f} s at 50 connections on aisix-gov")
        cpu_before = tree_cpu_seconds(target.roots)
        with RssSampler(target.roots, interval=5.0) as sampler:
            run = WrkRun(target.urls["static"], ALIASES["static"], target.key, 50, seconds)
            result = measured_wrk(run, target.roots, LOAD_CPUS)
        result["cpu_seconds_total"] = round(tree_cpu_seconds(target.roots) - cpu_before, 2)
        result["rss_samples"] = [(round(t, 1), round(r, 2)) for t, r in sampler.samples]
        result["rss_growth_mib_per_min"] = rss_slope(sampler.samples)
        return result


def rss_slope(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares RSS slope in MiB/min over the samples after the first 20% (warm-up)."""
    if not samples:
        return None
    usable = [(t, r) for t, r in samples if t >= 0.2 * samples[-1][0]]
    if len(usable) < 3:
        return None
    n = len(usable)
    mean_t = sum(t for t, _ in usable) / n
    mean_r = sum(r for _, r in usable) / n
    var = sum((t - mean_t) ** 2 for t, _ in usable)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in usable)
    return round(cov / var * 60, 3)


def tool_version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0] if text else ""


def metadata(profile: Profile, args: argparse.Namespace) -> dict[str, Any]:
    git = ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": profile.__dict__,
        "mode": "soak" if args.soak else profile.name,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nginx": tool_version(["nginx", "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
        "redis": tool_version(["redis-server", "--version"]),
        "litellm": LITELLM_VERSION,
        "aisix_commit": tool_version(git),
        "pinning": {"target": TARGET_CPUS, "load_and_upstreams": LOAD_CPUS},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def load_previous() -> dict[str, Any]:
    path = RESULTS_DIR / "results.json"
    try:
        previous: dict[str, Any] = json.loads(path.read_text())
        return previous
    except (OSError, ValueError):
        return {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="aisix benchmark harness (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (~3-4 minutes)")
    parser.add_argument("--soak", action="store_true", help="run only the soak (10 min)")
    parser.add_argument(
        "--profile",
        choices=[n for n in ALL_TARGETS if n != "direct"],
        help="only profile this target with py-spy under load (results/profiles/)",
    )
    parser.add_argument("--only", default="", help=f"comma list of targets from {ALL_TARGETS}")
    parser.add_argument("--no-litellm", action="store_true", help="skip installing LiteLLM")
    parser.add_argument("--no-scaling", action="store_true", help="skip the workers 1 vs 2 step")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each target, wait up to SECONDS for other processes to go quiet",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and configs")
    return parser.parse_args(argv)


def execute(run: Run, args: argparse.Namespace, names: list[str]) -> None:
    if args.profile:
        target = run.starter(args.profile, TARGET_CPUS)()
        seconds = 10 if args.quick else 20
        log(f"profiling {args.profile} with py-spy for {seconds} s at 50 connections")
        outcome = profile_target(target, seconds, RESULTS_DIR / "profiles", LOAD_CPUS)
        log(f"profile: {outcome.get('summary') or outcome.get('error')}")
        return
    if args.soak:
        try:
            run.results["soak"] = run.soak()
        except StartError as exc:
            run.results["soak"] = {"error": str(exc)}
        return
    for name in names:
        run.measure(name)
    if not args.no_scaling and not args.only:
        run.results["scaling"] = run.scaling()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    names = [n for n in (args.only.split(",") if args.only else ALL_TARGETS) if n]
    unknown = set(names) - set(ALL_TARGETS)
    if unknown:
        print(f"unknown targets: {sorted(unknown)}", file=sys.stderr)
        return 2
    # explicit, so Ctrl-C works even where SIGINT was inherited as ignored (background jobs)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    raise_fd_limit()
    raise_priority(PRIORITY)
    # the harness (its /proc sampling included) stays off the target's core
    os.sched_setaffinity(0, {int(c) for c in LOAD_CPUS.split(",")})
    started = time.monotonic()
    litellm_error = None
    if args.profile:
        names = [args.profile]
    if "litellm" in names and not args.soak:
        if args.no_litellm:
            names.remove("litellm")
        else:
            log(f"ensuring LiteLLM {LITELLM_VERSION} in {LITELLM_VENV}")
            litellm_error = ensure_litellm()
    workdir = Path(tempfile.mkdtemp(prefix="aisix-bench-"))
    group = ProcessGroup(workdir)
    run: Run | None = None
    interrupted = False
    try:
        run = Run(profile, workdir, group)
        run.wait_quiet = args.wait_quiet
        if litellm_error:
            run.results["skipped"]["litellm"] = litellm_error
            names.remove("litellm")
        execute(run, args, names)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every started process")
    except StartError as exc:
        log(f"cannot start: {exc}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        group.stop_all()
        if args.keep_workdir:
            log(f"logs and configs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if run is None or interrupted:
        return 130 if interrupted else 1
    if args.profile:
        return 0
    finish(run, args, profile, started)
    log(f"done in {time.monotonic() - started:.0f} s: see bench/RESULTS.md")
    return 0


def finish(run: Run, args: argparse.Namespace, profile: Profile, started: float) -> None:
    previous = load_previous()
    results = dict(previous) if args.soak else {**run.results, "soak": previous.get("soak")}
    if args.soak:
        results["soak"] = {**run.results["soak"], "meta": metadata(profile, args)}
    else:
        results["meta"] = metadata(profile, args)
        results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results.setdefault("meta", {}).setdefault("elapsed_s", round(time.monotonic() - started, 1))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_outputs(results, RESULTS_DIR, BENCH_DIR / "RESULTS.md", log)


if __name__ == "__main__":
    sys.exit(main())
