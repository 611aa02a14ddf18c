"""Turns raw results into figures, ratios, bench/RESULTS.md and the PNG chart.

`derive` computes the headline figures per target (added latency against the direct floor,
requests/s, TTFT overhead, chunk-gap p99, CPU-seconds per 1,000 requests, RSS; for the adapter
rows also the TTFT on the fixed stream against the direct floor of the same family and the
throughput relative to the OpenAI passthrough row), `ratios` the comparisons (aisix vs bare
proxy, aisix vs LiteLLM), `checks` the issue's targets. The chart is
drawn by bench/chart.py inside bench/.tools-venv (matplotlib is never a gateway dependency).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from families import FAMILIES
from report_md import render
from upstreams import BENCH_DIR
from venvs import TOOLS_VENV, ensure_tools

LABELS = {
    "direct": "direct upstream (floor)",
    "bare": "bare aiohttp proxy (ceiling)",
    "aisix-off": "aisix, governance off",
    "aisix-gov": "aisix, governance on",
    "aisix-gov-routed": "aisix, governance on, failover alias",
    "aisix-gov-redis": "aisix, governance on, Redis counters",
    "aisix-gemini": "aisix, governance on, OpenAI in → Gemini translated",
    "litellm": "LiteLLM proxy",
    **{name: f"aisix, {family.label}" for name, family in FAMILIES.items()},
}
#: the row every adapter row is compared with: OpenAI in, OpenAI passthrough, governance on
PASSTHROUGH = "aisix-gov"
MB_PER_MIB = 1.048576


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _ms(us: Any) -> float | None:
    return round(us / 1000.0, 3) if isinstance(us, int | float) else None


def _sub(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def figures(raw: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    """Headline figures of one target against the direct floor."""
    p50 = _ms(_get(raw, "latency_c1", "latency_us", "p50"))
    p99 = _ms(_get(raw, "latency_c1", "latency_us", "p99"))
    ttft = _get(raw, "stream_ttft", "ttft_ms", "p50")
    fixed = _get(raw, "stream_ttft_fixed", "ttft_ms", "p50")
    wire = _get(raw, "info", "upstream_wire") or "openai"
    loads = [raw.get(k) or {} for k in ("load_c50", "load_c200", "stream_load_c50")]
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "added_p50_ms": _sub(p50, _ms(_get(direct, "latency_c1", "latency_us", "p50"))),
        "added_p99_ms": _sub(p99, _ms(_get(direct, "latency_c1", "latency_us", "p99"))),
        "rps_c50": _get(raw, "load_c50", "rps"),
        "rps_c200": _get(raw, "load_c200", "rps"),
        "stream_rps_c50": _get(raw, "stream_load_c50", "rps"),
        "cpu_s_per_1k": _get(raw, "load_c50", "cpu_s_per_1k"),
        "ttft_p50_ms": ttft,
        "ttft_overhead_ms": _sub(ttft, _get(direct, "stream_ttft", "ttft_ms", "p50")),
        "gap_p99_ms": _get(raw, "stream_ttft", "gap_ms", "p99"),
        "ttft_fixed_p50_ms": fixed,
        "ttft_fixed_overhead_ms": _sub(fixed, _get(direct, "fixed_ttft", wire, "ttft_ms", "p50")),
        "rss_idle_mib": raw.get("rss_idle_mib"),
        "rss_load_mib": max((x.get("rss_peak_mib") or 0 for x in loads), default=None) or None,
        "rss_hold_mib": _get(raw, "hold", "rss_mib_at_max_open"),
        "held_streams": _get(raw, "hold", "max_open"),
        "hold_errors": _get(raw, "hold", "errors"),
        "failed_requests": sum(x.get("failed") or 0 for x in loads),
        "foreign_cpu_pct": _foreign_pct([raw.get("latency_c1") or {}, *loads]),
        "errors": sorted(k for k, v in raw.items() if isinstance(v, dict) and "error" in v),
    }


def _foreign_pct(runs: list[dict[str, Any]]) -> float | None:
    shares = [r["foreign_cpu_share"] for r in runs if r.get("foreign_cpu_share") is not None]
    return round(max(shares) * 100, 1) if shares else None


def derive(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    targets = results.get("targets", {})
    direct = targets.get("direct", {})
    derived = {name: figures(raw, direct) for name, raw in targets.items()}
    if "direct" in derived:
        # the held streams go to the paced upstream, not nginx: no gateway RSS to report
        derived["direct"].update(rss_hold_mib=None, rss_load_mib=None)
    routed = _get(targets, "aisix-gov", "routed")
    if isinstance(routed, dict) and "latency_c1" in routed:
        derived["aisix-gov-routed"] = figures(routed, direct)
        # same process as aisix-gov: its RSS figures belong to that row
        derived["aisix-gov-routed"].update(rss_idle_mib=None, rss_load_mib=None)
    passthrough = derived.get(PASSTHROUGH, {})
    for name in FAMILIES:
        if name in derived:
            mine = derived[name]
            for key in ("rps_c50", "rps_c200", "stream_rps_c50"):
                mine[f"{key}_vs_passthrough"] = _ratio(mine.get(key), passthrough.get(key))
    return derived


def _ratio(a: Any, b: Any, digits: int = 3) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, digits)
    return None


def ratios(derived: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bare, lite = derived.get("bare", {}), derived.get("litellm", {})
    for name in ("aisix-off", "aisix-gov", "aisix-gov-redis"):
        mine = derived.get(name, {})
        for conc in ("c50", "c200"):
            out[f"{name} / bare rps {conc}"] = _ratio(
                mine.get(f"rps_{conc}"), bare.get(f"rps_{conc}")
            )
            out[f"{name} / litellm rps {conc}"] = _ratio(
                mine.get(f"rps_{conc}"), lite.get(f"rps_{conc}"), 1
            )
        out[f"litellm / {name} cpu per 1k"] = _ratio(
            lite.get("cpu_s_per_1k"), mine.get("cpu_s_per_1k"), 1
        )
    return out


def checks(
    results: dict[str, Any], derived: dict[str, Any], rat: dict[str, Any]
) -> list[dict[str, Any]]:
    """The issue's targets for aisix with governance on, one worker."""
    gov = derived.get("aisix-gov", {})
    hold_mb = gov.get("rss_hold_mib") and round(gov["rss_hold_mib"] * MB_PER_MIB, 1)
    tput = [rat.get(f"aisix-gov / bare rps {c}") for c in ("c50", "c200")]
    lite = [rat.get(f"aisix-gov / litellm rps {c}") for c in ("c50", "c200")]
    soak = _get(results, "soak", "rss_growth_mib_per_min")
    soak_us = _get(results, "soak", "duration_us")
    soak_s = round(soak_us / 1e6) if isinstance(soak_us, int | float) else None
    # (what, measured, goal text, bound, True when the bound is an upper bound)
    rows: list[tuple[str, Any, str, float, bool]] = [
        ("added p50 at c=1 (ms)", gov.get("added_p50_ms"), "≤ 0.6 ms", 0.6, True),
        ("added p99 at c=1 (ms)", gov.get("added_p99_ms"), "≤ 2 ms", 2.0, True),
        ("req/s vs bare proxy (min of c50, c200)", _min(tput), "≥ 0.75", 0.75, False),
        ("req/s vs LiteLLM (min of c50, c200)", _min(lite), "≥ 40×", 40.0, False),
        ("streaming TTFT overhead p50 (ms)", gov.get("ttft_overhead_ms"), "≤ 1 ms", 1.0, True),
        (f"RSS holding {gov.get('held_streams')} streams (MB)", hold_mb, "≤ 100 MB", 100.0, True),
        (f"soak RSS growth (MiB/min, {soak_s} s soak)", soak, "≈ 0 (≤ 0.1)", 0.1, True),
    ]
    out = []
    for what, value, goal, bound, upper in rows:
        if not isinstance(value, int | float):
            verdict = "n/a"
        else:
            verdict = "pass" if (value <= bound if upper else value >= bound) else "FAIL"
        out.append({"target": what, "value": value, "goal": goal, "verdict": verdict})
    return out


def _min(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, int | float)]
    return min(nums) if len(nums) == len(values) and nums else None


def write_outputs(
    results: dict[str, Any], results_dir: Path, md_path: Path, log: Callable[[str], None]
) -> None:
    """Add derived figures to results, write results.json, RESULTS.md and chart.png."""
    results["derived"] = derive(results)
    results["ratios"] = ratios(results["derived"])
    results["checks"] = checks(results, results["derived"], results["ratios"])
    json_path = results_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    chart_note = draw_chart(json_path, results_dir / "chart.png", log)
    md_path.write_text(render(results, LABELS, chart_note))


def draw_chart(json_path: Path, png_path: Path, log: Callable[[str], None]) -> str | None:
    """Draw the chart with the tools venv; return a note when it could not be drawn."""
    error = ensure_tools()
    if error:
        log(f"chart skipped: {error}")
        return f"chart not drawn: {error}"
    proc = subprocess.run(
        [
            str(TOOLS_VENV / "bin" / "python"),
            str(BENCH_DIR / "chart.py"),
            str(json_path),
            str(png_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        log(f"chart failed: {proc.stderr[-300:]}")
        return f"chart not drawn: {proc.stderr[-200:]}"
    return None
