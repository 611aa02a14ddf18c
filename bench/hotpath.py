"""Hot-path profile: py-spy samples a target while wrk loads it.

`python bench/run.py --profile aisix-gov` starts the upstreams and the target, warms it up, then
runs `py-spy record --gil --format raw` on the target's process tree during a 50-connection wrk
run (only GIL-holding samples: the shares are of Python CPU time, idle waits excluded).
It writes the collapsed stacks (bench/results/profiles/<target>.collapsed, loadable in
speedscope or flamegraph.pl) and a summary of the functions with the most self and inclusive
samples (<target>.txt). py-spy is installed into bench/.tools-venv.
"""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Any

from load import WrkRun, measured_wrk
from targets import Target
from venvs import TOOLS_VENV, ensure_tools

PY_SPY = TOOLS_VENV / "bin" / "py-spy"


def _function(frame: str) -> str:
    """`name (path:line)` -> `name (path)`: one entry per function, whatever the line."""
    head, sep, _line = frame.rpartition(":")
    return head + ")" if sep and frame.endswith(")") else frame


def summarize(collapsed: str, top: int = 30) -> str:
    """Top functions by self and inclusive samples, and top lines by self samples."""
    own_line: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own_line[frames[-1]] += count
        own[_function(frames[-1])] += count
        for function in {_function(f) for f in frames}:
            inclusive[function] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples, only of threads holding the GIL (Python CPU time, no idle waits)"]
    for title, counter in (
        ("functions by self samples", own),
        ("functions by inclusive samples", inclusive),
        ("lines by self samples", own_line),
    ):
        lines += ["", f"top {top} {title}:"]
        lines += [f"{n / total:7.2%}  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"


def profile_target(
    target: Target, seconds: float, out_dir: Path, load_cpus: str | None
) -> dict[str, Any]:
    """Record the target under 50 connections; returns wrk figures and the output paths."""
    error = ensure_tools()
    if error:
        return {"error": error}
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"{target.name}.collapsed"
    warm = WrkRun(target.urls["static"], target.models["static"], target.key, 8, 2)
    measured_wrk(warm, target.roots, load_cpus)
    argv = [
        str(PY_SPY), "record", "--format", "raw", "--output", str(collapsed),
        "--pid", str(target.roots[0]), "--subprocesses", "--rate", "200", "--gil",
        "--duration", str(round(seconds) + 1),
    ]  # fmt: skip
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        run = WrkRun(target.urls["static"], target.models["static"], target.key, 50, seconds)
        figures = measured_wrk(run, target.roots, load_cpus)
        _, stderr = spy.communicate(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not collapsed.exists():
        return {"error": f"py-spy failed ({spy.returncode}): {stderr[-300:]!r}"}
    summary = out_dir / f"{target.name}.txt"
    summary.write_text(summarize(collapsed.read_text()))
    return {"load": figures, "collapsed": str(collapsed), "summary": str(summary)}
