"""Metrics across proxy worker processes (`proxy.workers > 1`).

Only the main process binds the status listener, so at each scrape it asks every extra worker
for its series over a pipe made at spawn (`WorkerLinks`) and merges them into its own
(`Metrics.render(others)`: counters and histograms add up, gauges sum or take the maximum). A
worker answers from its event loop (`serve_metrics_requests`) without any work on the request
path. A worker that does not answer within `worker_timeout_ms` is left out of that scrape and
counted in `aisix_metrics_worker_scrape_failures_total`; its late answer is discarded by
sequence number.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("aisix.obs.workers")
Dump = dict[str, dict[tuple[str, ...], Any]]


def serve_metrics_requests(
    loop: asyncio.AbstractEventLoop, conn: Connection, dump: Callable[[], Dump]
) -> None:
    """Worker side: answer every `(seq)` request on `conn` with `(seq, dump())`."""

    def answer() -> None:
        try:
            seq = conn.recv()
            conn.send((seq, dump()))
        except (EOFError, OSError):  # the main process is gone
            loop.remove_reader(conn.fileno())

    loop.add_reader(conn.fileno(), answer)


class WorkerLinks:
    """Main side: one pipe per extra worker; `collect()` gathers their dumps."""

    def __init__(
        self, conns: list[Connection], timeout_s: float, on_failure: Callable[[float], None]
    ) -> None:
        self.conns = conns
        self.timeout_s = timeout_s
        self.on_failure = on_failure  # called on the event loop with the number of misses
        self._seq = itertools.count(1)
        self._lock = asyncio.Lock()

    async def collect(self) -> list[Dump]:
        if not self.conns:
            return []
        async with self._lock:  # one scrape at a time owns the pipes
            dumps = await asyncio.to_thread(self._collect, next(self._seq))
        missing = len(self.conns) - len(dumps)
        if missing:
            self.on_failure(missing)
        return dumps

    def _collect(self, seq: int) -> list[Dump]:
        """In a thread: ask every worker, then wait for each answer in turn."""
        asked = []
        for conn in self.conns:
            try:
                conn.send(seq)
                asked.append(conn)
            except (OSError, ValueError):
                continue
        dumps = []
        for conn in asked:
            dump = self._answer(conn, seq)
            if dump is not None:
                dumps.append(dump)
        return dumps

    def _answer(self, conn: Connection, seq: int) -> Dump | None:
        try:
            while conn.poll(self.timeout_s):
                got, dump = conn.recv()
                if got == seq:
                    return dump  # type: ignore[no-any-return]
        except (EOFError, OSError, ValueError) as exc:
            log.warning("a proxy worker did not answer the metrics scrape: %s", exc)
        return None
