"""Streaming probe: times every SSE chunk a target relays from the paced upstream.

Two modes, each printing one JSON object on stdout:
- `ttft`: N streams one after another on a kept-alive connection; records time to the first
  content chunk and every gap between content chunks (ms). `--format` says what a content
  chunk is: `openai` (a `data:` chunk with a choice), `anthropic` (a `content_block_delta`
  event), `gemini` (a `data:` chunk with a candidate) or `bedrock` (a `contentBlockDelta`
  frame of the AWS event-stream binary framing).
- `hold`: N streams at once against a slow paced stream; while they are open, samples the RSS of
  the target's process tree (`--pid`, repeatable) and reports it with the number of open streams.
Run: python bench/stream_probe.py ttft --url URL --model M --key K --count 50
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from fixtures import request_body
from procs import tree_rss_mib


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100.0 * len(ordered)) - 1))
    return ordered[rank]


def is_content_event(event: bytes) -> bool:
    """True for a `data:` chunk that carries a choice (not usage-only, [DONE] or a comment)."""
    return _data_has(event, b"choices")


def _data_has(event: bytes, key: bytes) -> bool:
    if not event.startswith(b"data:"):
        return False
    payload = event[5:].strip()
    if payload == b"[DONE]":
        return False
    try:
        return bool(orjson.loads(payload).get(key.decode()))
    except orjson.JSONDecodeError:
        return False


def is_anthropic_content(event: bytes) -> bool:
    """True for an Anthropic `content_block_delta` event (text, thinking or tool input)."""
    return event.startswith(b"event: content_block_delta") or event.startswith(
        b"event:content_block_delta"
    )


class SseCounter:
    """Splits an SSE byte stream into events; counts those `is_content` accepts."""

    def __init__(self, is_content: Callable[[bytes], bool]) -> None:
        self.is_content = is_content
        self.buffer = b""

    def feed(self, data: bytes) -> int:
        self.buffer += data.replace(b"\r\n", b"\n")
        *events, self.buffer = self.buffer.split(b"\n\n")
        return sum(1 for event in events if self.is_content(event))


class FrameCounter:
    """Splits an AWS event-stream into frames (prelude: total and header lengths, 4-byte CRC);
    counts `contentBlockDelta` events. CRCs are the gateway's business, not the probe's."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> int:
        self.buffer += data
        count = 0
        while len(self.buffer) >= 12:
            total, header_len = struct.unpack_from(">II", self.buffer)
            if len(self.buffer) < total:
                break
            headers = self.buffer[12 : 12 + header_len]
            self.buffer = self.buffer[total:]
            count += b"\x0b:event-type\x07\x00\x11contentBlockDelta" in headers
        return count


def counter(fmt: str) -> SseCounter | FrameCounter:
    """A fresh content-chunk counter for one stream of format `fmt`."""
    if fmt == "bedrock":
        return FrameCounter()
    if fmt == "anthropic":
        return SseCounter(is_anthropic_content)
    if fmt == "gemini":
        return SseCounter(lambda event: _data_has(event, b"candidates"))
    return SseCounter(is_content_event)


@dataclass
class StreamResult:
    """Arrival times (s since request start) of each content chunk, or an error."""

    chunk_times: list[float] = field(default_factory=list)
    error: str | None = None


async def one_stream(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    on_first: asyncio.Event | None = None,
    fmt: str = "openai",
) -> StreamResult:
    result = StreamResult()
    chunks = counter(fmt)
    start = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                result.error = f"status {resp.status}: {(await resp.read())[:200]!r}"
                return result
            async for data in resp.content.iter_any():
                now = time.perf_counter() - start
                found = chunks.feed(data)
                result.chunk_times.extend([now] * found)
                if found and on_first is not None and not on_first.is_set():
                    on_first.set()
    except (TimeoutError, aiohttp.ClientError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if not result.chunk_times and result.error is None:
        result.error = "no content chunks"
    return result


def summarize(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


async def run_ttft(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    body = request_body(args.model, stream=True).encode()
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    ttfts: list[float] = []
    gaps: list[float] = []
    chunks: list[int] = []
    errors: list[str] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for index in range(args.warmup + args.count):
            result = await one_stream(session, args.url, headers, body, fmt=args.format)
            if index < args.warmup:
                continue
            if result.error:
                errors.append(result.error)
                continue
            times = result.chunk_times
            ttfts.append(times[0] * 1000)
            gaps.extend((b - a) * 1000 for a, b in itertools.pairwise(times))
            chunks.append(len(times))
    return {
        "streams": len(ttfts),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "chunks_per_stream": sum(chunks) / len(chunks) if chunks else None,
        "ttft_ms": summarize(ttfts),
        "gap_ms": summarize(gaps),
    }


async def run_hold(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    body = request_body(args.model, stream=True).encode()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    state = {"open": 0}
    samples: list[tuple[int, float]] = []

    async def tracked() -> StreamResult:
        first = asyncio.Event()
        task = asyncio.ensure_future(one_stream(session, args.url, headers, body, first))
        waiter = asyncio.ensure_future(first.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        opened = first.is_set()
        state["open"] += opened
        result = await task
        waiter.cancel()
        state["open"] -= opened
        return result

    async def sampler() -> None:
        while True:
            samples.append((state["open"], tree_rss_mib(args.pid) if args.pid else 0.0))
            await asyncio.sleep(0.1)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampling = asyncio.ensure_future(sampler())
        tasks = []
        for index in range(args.count):
            tasks.append(asyncio.ensure_future(tracked()))
            if index % 100 == 99:
                await asyncio.sleep(0.05)  # ramp in batches, not one SYN flood
        results = await asyncio.gather(*tasks)
        sampling.cancel()
    max_open = max((n for n, _ in samples), default=0)
    errors = [r.error for r in results if r.error]
    return {
        "streams": args.count,
        "completed": sum(1 for r in results if not r.error),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "max_open": max_open,
        "rss_mib_at_max_open": max((rss for n, rss in samples if n == max_open), default=None),
        "rss_mib_peak": max((rss for _, rss in samples), default=None),
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["ttft", "hold"])
    parser.add_argument("--url", required=True, help="full chat completions URL")
    parser.add_argument("--model", required=True)
    parser.add_argument("--key", default="bench-key")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument(
        "--format", choices=["openai", "anthropic", "gemini", "bedrock"], default="openai"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    runner = run_ttft if args.mode == "ttft" else run_hold
    print(json.dumps(asyncio.run(runner(args))))


if __name__ == "__main__":
    main()
