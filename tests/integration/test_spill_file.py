"""The spill file on a real filesystem: the size bound keeps the oldest lines, and processes
appending while another claims and settles never lose or interleave a line (flock)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from aisix.usage.spill import SpillFile

LINES_PER_WRITER = 300


def _writer(path: str, name: str) -> None:
    spill = SpillFile(Path(path), 1 << 30)
    for i in range(LINES_PER_WRITER):
        assert spill.append(f"{name}-{i:04d}-{'x' * 100}\n".encode())


def test_bound_keeps_the_oldest(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 100)
    assert spill.append(b"a" * 59 + b"\n")
    assert not spill.append(b"b" * 59 + b"\n")  # would pass 100 bytes: refused
    assert spill.append(b"c" * 39 + b"\n")
    assert spill.size() == 100
    assert spill.claim() == [b"a" * 59 + b"\n", b"c" * 39 + b"\n"]
    assert not spill.append(b"d\n")  # the claimed file still counts
    spill.settle([b"c" * 39 + b"\n"])
    assert spill.size() == 40 and spill.claim() == [b"c" * 39 + b"\n"]
    spill.settle([])
    assert spill.size() == 0 and spill.claim() == []


def test_concurrent_appends_and_claims_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spill.jsonl"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(str(path), f"w{n}")) for n in range(4)]
    for proc in writers:
        proc.start()
    spill = SpillFile(path, 1 << 30)
    seen: list[bytes] = []
    while any(proc.is_alive() for proc in writers):
        seen += spill.claim()
        spill.settle([])
    for proc in writers:
        proc.join()
        assert proc.exitcode == 0
    seen += spill.claim()
    spill.settle([])
    assert len(seen) == 4 * LINES_PER_WRITER
    assert len(set(seen)) == len(seen)
    assert all(line.endswith(b"x" * 100 + b"\n") for line in seen)  # none interleaved
