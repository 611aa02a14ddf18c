"""Main-side collection of worker metrics over real pipes (`aisix.obs.workers`): answers are
matched by sequence number, a late worker is left out and counted, a dead one too."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

from aisix.obs.workers import WorkerLinks, serve_metrics_requests


def test_a_late_answer_is_left_out_then_discarded() -> None:
    main_end, worker_end = multiprocessing.Pipe()
    delays = [0.4, 0.0]

    def slow_worker() -> None:
        for delay in delays:
            seq = worker_end.recv()
            time.sleep(delay)
            worker_end.send((seq, {"aisix_x": {(): float(seq)}}))

    threading.Thread(target=slow_worker, daemon=True).start()
    missed: list[float] = []

    async def main() -> tuple[list[Any], list[Any]]:
        links = WorkerLinks([main_end], 0.1, missed.append)
        first = await links.collect()
        await asyncio.sleep(0.5)  # the late answer to scrape 1 is now waiting in the pipe
        second = await links.collect()
        return first, second

    first, second = asyncio.run(main())
    assert first == [] and missed == [1]
    assert second == [{"aisix_x": {(): 2.0}}]  # scrape 2's answer, not scrape 1's


def test_a_worker_loop_answers_and_a_closed_pipe_counts_as_missing() -> None:
    main_end, worker_end = multiprocessing.Pipe()
    dead_main, dead_worker = multiprocessing.Pipe()
    dead_worker.close()
    missed: list[float] = []

    async def main() -> list[Any]:
        serve_metrics_requests(asyncio.get_running_loop(), worker_end, lambda: {"f": {(): 7.0}})
        links = WorkerLinks([main_end, dead_main], 1.0, missed.append)
        return await links.collect()

    assert asyncio.run(main()) == [{"f": {(): 7.0}}]
    assert missed == [1]
