"""Micro-benchmark of the governor's per-request work on the memory backend.

One cycle is what the proxy does for a request that passes every layer: `admit_gate` (key
rpm + tpm + concurrency, model rpm + tpm, and a monthly key budget), `admit_attempt` (the
alias is its own target, so nothing more), `ratelimit_headers(gate, attempt)`, then `settle`
on both holds. No upstream, no HTTP: only the governor, in-process.

    .venv/bin/python bench/governor_micro.py [--cycles 20000] [--repeat 5]

Prints the best and median µs per cycle over `--repeat` runs (best is the least disturbed
by other load on the machine), and the §9.3 estimate's cost for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from typing import Any

from aisix.events import Usage
from aisix.limits.governor import Governor, ratelimit_headers
from aisix.limits.memory import MemoryBackend
from aisix.loader import build_snapshot
from aisix.pricing import estimate_request
from aisix.providers.registry import build_target
from aisix.settings import RateLimitSettings
from aisix.snapshot import Record

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "Hello there, how are you?"}],
}
USAGE = Usage(9, 9, 0, 18)


def records() -> list[Record]:
    """A provider key, a priced model with rpm + tpm, and a key with rpm + tpm +
    concurrency and a monthly budget; limits high enough never to refuse."""
    key_hash = hashlib.sha256(b"sk-bench").hexdigest()
    return [
        Record(
            "provider_keys",
            "pk",
            {"display_name": "p", "secret": "s", "api_base": "http://x/v1"},
            1,
        ),
        Record(
            "models",
            "m1",
            {
                "display_name": "m",
                "provider": "openai",
                "model_name": "gpt-4o",
                "provider_key_id": "pk",
                "rate_limit": {"rpm": 100_000_000, "tpm": 1_000_000_000},
                "pricing": {"input_per_million": 2.5, "output_per_million": 10},
            },
            1,
        ),
        Record(
            "api_keys",
            "k1",
            {
                "key_hash": key_hash,
                "allowed_models": ["*"],
                "rate_limit": {"rpm": 100_000_000, "tpm": 1_000_000_000, "concurrency": 100_000},
                "budget": {"limit_usd": 1_000_000, "period": "month"},
            },
            1,
        ),
    ]


async def run(cycles: int, repeat: int) -> list[float]:
    """µs per full governor cycle, one figure per repeat."""
    snap = build_snapshot(records(), 1, None, build_target)
    gov = Governor(RateLimitSettings(), MemoryBackend(), None)
    key, alias = snap.api_keys["k1"], snap.models_by_alias["m"]
    est = estimate_request(BODY, 1024, False)

    async def one() -> None:
        gate = await gov.admit_gate(snap, key, alias, est, [alias])
        attempt = await gov.admit_attempt(snap, key, alias, est, alias)
        ratelimit_headers(gate, attempt)
        await attempt.settle(USAGE, 0.0001)
        await gate.settle(USAGE, 0.0001)

    for _ in range(1000):  # warm up: plans, caches, specialised bytecode
        await one()
    results = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(cycles):
            await one()
        results.append((time.perf_counter() - start) / cycles * 1e6)
    return results


def estimate_us(cycles: int) -> float:
    start = time.perf_counter()
    for _ in range(cycles):
        estimate_request(BODY, 1024, False)
    return (time.perf_counter() - start) / cycles * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(run(args.cycles, args.repeat))
    print(
        f"governor full cycle: best {min(results):.1f} us, "
        f"median {statistics.median(results):.1f} us ({args.repeat} x {args.cycles} cycles)"
    )
    print(f"estimate_request: {estimate_us(args.cycles):.2f} us")


if __name__ == "__main__":
    main()
