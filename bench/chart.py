"""Draws bench/results/chart.png from results.json (run inside bench/.tools-venv).

Four panels comparing the targets: added latency p50/p99 at concurrency 1, requests/s at 50 and
200 connections, CPU-seconds per 1,000 requests, and RSS (idle, under load, holding streams).
Run: bench/.tools-venv/bin/python bench/chart.py bench/results/results.json out.png
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from report_md import ORDER  # one target order for the table and the chart

SHORT = {
    "direct": "direct",
    "bare": "bare",
    "aisix-off": "aisix\noff",
    "aisix-gov": "aisix\ngov",
    "aisix-gov-routed": "aisix\nrouted",
    "aisix-gov-redis": "aisix\nredis",
    "litellm": "LiteLLM",
}


def grouped(
    ax: Any, names: list[str], series: dict[str, list[float]], title: str, *, log: bool = False
) -> None:
    """One panel of grouped bars; missing values (NaN) draw nothing."""
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width, label=label)
        labels = [
            "" if math.isnan(v) else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}") for v in values
        ]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), [SHORT.get(n, n) for n in names], fontsize=8)
    finite = [v for values in series.values() for v in values if not math.isnan(v) and v > 0]
    if log and finite:
        ax.set_yscale("log")
    if not finite:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    derived: dict[str, dict[str, Any]] = results.get("derived", {})
    proxies = [n for n in ORDER if n in derived and n != "direct"]
    processes = [n for n in proxies if n != "aisix-gov-routed"]  # routed shares aisix-gov's

    def col(key: str, names: list[str], floor: float = 0.0) -> list[float]:
        values = [derived[n].get(key) for n in names]
        return [max(float(v), floor) if isinstance(v, int | float) else math.nan for v in values]

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    latency = {"p50": col("added_p50_ms", proxies, 0.01), "p99": col("added_p99_ms", proxies, 0.01)}
    grouped(
        axes[0][0], proxies, latency, "added latency at c=1, ms (log, lower is better)", log=True
    )
    rps = {"c=50": col("rps_c50", proxies, 1), "c=200": col("rps_c200", proxies, 1)}
    grouped(axes[0][1], proxies, rps, "requests/s, non-streaming (log, higher is better)", log=True)
    cpu = {"CPU-s / 1k req": col("cpu_s_per_1k", proxies, 0.001)}
    grouped(
        axes[1][0], proxies, cpu, "CPU-seconds per 1,000 requests (log, lower is better)", log=True
    )
    rss = {
        "idle": col("rss_idle_mib", processes),
        "under load": col("rss_load_mib", processes),
        "holding streams": col("rss_hold_mib", processes),
    }
    grouped(axes[1][1], processes, rss, "RSS MiB of the process tree (lower is better)")
    meta = results.get("meta", {})
    title = (
        f"aisix benchmark, {meta.get('date')} ({meta.get('mode')} profile, {meta.get('cpus')} CPUs)"
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
