"""Lock-free metric families for the single-threaded event loop, exposed to Prometheus.

`prometheus_client`'s own metrics take a lock on every increment; on the proxy's hot path a
request updates about a dozen series, so that cost showed in profiles. Here a series is a
plain object updated without locks (all updates and scrapes run on the event-loop thread),
and a `collect()` at scrape time turns the families into prometheus_client metric families,
which its text renderer (format 0.0.4) writes out. With `proxy.workers > 1` the main process
merges in the other workers' `snapshot()`s (`aisix.obs.workers`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)


class CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeSeries(CounterSeries):
    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramSeries:
    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value


class Family:
    """One metric name with its series by label values; `child(*labels)` is a dict hit."""

    def __init__(
        self, kind: str, name: str, doc: str, labels: tuple[str, ...] = (), **options: Any
    ) -> None:
        self.kind = kind
        self.name = name
        self.doc = doc
        self.labels = labels
        self.buckets: tuple[float, ...] = options.get("buckets", ())
        #: how a gauge combines across worker processes: "sum" (in flight) or "max" (states)
        self.merge: str = options.get("merge", "max")
        self.series: dict[tuple[str, ...], Any] = {}
        self.read: Callable[[], float] | None = None

    def child(self, *labels: str) -> Any:
        found = self.series.get(labels)
        if found is None:
            if self.kind == "histogram":
                found = HistogramSeries(self.buckets)
            elif self.kind == "gauge":
                found = GaugeSeries()
            else:
                found = CounterSeries()
            self.series[labels] = found
        return found

    # unlabelled families are used directly
    def inc(self, amount: float = 1.0) -> None:
        self.child().inc(amount)

    def set(self, value: float) -> None:
        self.child().set(value)

    def set_function(self, read: Callable[[], float]) -> None:
        self.read = read

    def snapshot(self) -> dict[tuple[str, ...], Any]:
        """Plain values, for another process to merge: a float per series, or
        (bucket counts, sum) for a histogram series."""
        if self.kind == "histogram":
            return {labels: (list(s.counts), s.total) for labels, s in self.series.items()}
        values = {labels: s.value for labels, s in self.series.items()}
        if self.read is not None:
            values[()] = self.read()
        return values

    def merged(self, others: Sequence[dict[tuple[str, ...], Any]]) -> dict[tuple[str, ...], Any]:
        """This process's snapshot merged with other processes' snapshots of the same family:
        counters and histograms add up, gauges by `merge` ("sum" or "max")."""
        merged = self.snapshot()
        for other in others:
            for labels, value in other.items():
                mine = merged.get(labels)
                if mine is None:
                    merged[labels] = value
                elif self.kind == "histogram":
                    counts = [a + b for a, b in zip(mine[0], value[0], strict=True)]
                    merged[labels] = (counts, mine[1] + value[1])
                elif self.kind == "gauge" and self.merge == "max":
                    merged[labels] = max(mine, value)
                else:
                    merged[labels] = mine + value
        return merged

    def collect(self, others: Sequence[dict[tuple[str, ...], Any]] = ()) -> Metric:
        values = self.merged(others)
        if self.kind == "histogram":
            hist = HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
            for labels, (counts, total) in values.items():
                cumulative, running = [], 0
                for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                    running += count
                    cumulative.append((_le(bound), running))
                hist.add_metric(list(labels), cumulative, total)
            return hist
        cls = GaugeMetricFamily if self.kind == "gauge" else CounterMetricFamily
        family = cls(self.name, self.doc, labels=list(self.labels))
        for labels, value in values.items():
            family.add_metric(list(labels), value)
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class FamilyCollector:
    """A prometheus_client collector over our families (registered once per registry).
    `others`: snapshots from other worker processes to merge in at the next collect."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families
        self.others: Sequence[dict[str, dict[tuple[str, ...], Any]]] = ()

    def collect(self) -> Iterator[Metric]:
        others = self.others
        for family in self.families:
            yield family.collect([o[family.name] for o in others if family.name in o])
