"""The bench report's adapter rows: each row's figures are taken against the right floors
(added latency against the direct target, fixed-stream TTFT against the direct read of the
same family's stream), compared with the OpenAI passthrough row, and rendered in their own
RESULTS.md table; a row the gateway could not serve (the 501 of a missing adapter) is named
with its reason instead of a row of dashes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import report_md  # noqa: E402


def run(p50_us: int, rps: float, stream_rps: float, ttft: float, wire: str | None) -> Any:
    raw: dict[str, Any] = {
        "info": {"upstream_wire": wire} if wire else {},
        "latency_c1": {"latency_us": {"p50": p50_us, "p99": 2 * p50_us}},
        "load_c50": {"rps": rps, "cpu_s_per_1k": 0.4},
        "load_c200": {"rps": rps / 2},
        "stream_load_c50": {"rps": stream_rps},
        "stream_ttft_fixed": {"ttft_ms": {"p50": ttft}},
    }
    return raw


def floor(ttft: float) -> dict[str, Any]:
    return {"ttft_ms": {"p50": ttft}}


RESULTS: dict[str, Any] = {
    "targets": {
        "direct": {
            "latency_c1": {"latency_us": {"p50": 100, "p99": 200}},
            "fixed_ttft": {
                "openai": floor(0.2),
                "anthropic": floor(0.3),
                "bedrock": floor(0.5),
                "gemini": floor(0.25),
            },
        },
        "aisix-gov": run(600, 2000.0, 1500.0, 1.0, None),
        "aisix-anthropic": run(700, 1600.0, 1200.0, 1.5, "anthropic"),
        "aisix-bedrock": run(900, 1000.0, 750.0, 2.5, "bedrock"),
    },
    "skipped": {
        "aisix-gemini": "this gateway answers 501 for adapter 'gemini' (not in this build)"
    },
}


def test_adapter_rows_against_their_floors_and_the_passthrough_row() -> None:
    derived = report.derive(RESULTS)
    gov, anthropic, bedrock = (
        derived[n] for n in ("aisix-gov", "aisix-anthropic", "aisix-bedrock")
    )
    assert (gov["added_p50_ms"], anthropic["added_p50_ms"], bedrock["added_p50_ms"]) == (
        0.5,
        0.6,
        0.8,
    )
    # each TTFT overhead is against the direct read of its own family's fixed stream
    assert gov["ttft_fixed_overhead_ms"] == 0.8
    assert anthropic["ttft_fixed_overhead_ms"] == 1.2
    assert bedrock["ttft_fixed_overhead_ms"] == 2.0
    assert bedrock["rps_c50_vs_passthrough"] == 0.5
    assert bedrock["rps_c200_vs_passthrough"] == 0.5
    assert anthropic["stream_rps_c50_vs_passthrough"] == 0.8
    assert "rps_c50_vs_passthrough" not in gov


def test_rendered_table_and_skipped_row() -> None:
    results = {**RESULTS, "derived": report.derive(RESULTS)}
    lines = report_md._families(results)
    rows = [line for line in lines if line.startswith("| ") and "`aisix-" in line]
    assert [row.split("`")[1] for row in rows] == ["aisix-gov", "aisix-anthropic", "aisix-bedrock"]
    bedrock = [cell.strip() for cell in rows[2].split("|")[1:-1]]
    header = [cell.strip() for cell in lines[4].split("|")[1:-1]]
    assert bedrock[header.index("TTFT overhead ms")] == "2.000"
    assert bedrock[header.index("req/s c=50")] == "1,000.0"
    assert (
        "- `aisix-gemini` not measured: this gateway answers 501 for adapter 'gemini'"
        in "\n".join(lines)
    )


def test_no_adapter_section_without_adapter_rows() -> None:
    targets = {n: RESULTS["targets"][n] for n in ("direct", "aisix-gov")}
    results = {"targets": targets, "skipped": {}}
    results["derived"] = report.derive(results)
    assert report_md._families(results) == []
