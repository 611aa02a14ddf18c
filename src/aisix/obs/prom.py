"""Lock-free metric families for the single-threaded event loop, exposed to Prometheus.

`prometheus_client`'s own metrics take a lock on every increment; on the proxy's hot path a
request updates about a dozen series, so that cost showed in profiles. Here a series is a
plain object updated without locks (all updates and scrapes run on the event-loop thread),
and a `collect()` at scrape time turns the families into prometheus_client metric families,
which its text renderer (format 0.0.4) writes out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
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

    def collect(self) -> Metric:
        if self.kind == "histogram":
            hist = HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
            for labels, series in self.series.items():
                cumulative, running = [], 0
                for bound, count in zip((*self.buckets, float("inf")), series.counts, strict=True):
                    running += count
                    cumulative.append((_le(bound), running))
                hist.add_metric(list(labels), cumulative, series.total)
            return hist
        cls = GaugeMetricFamily if self.kind == "gauge" else CounterMetricFamily
        family = cls(self.name, self.doc, labels=list(self.labels))
        if self.read is not None:
            family.add_metric([], self.read())
        for labels, series in self.series.items():
            family.add_metric(list(labels), series.value)
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class FamilyCollector:
    """A prometheus_client collector over our families (registered once per registry)."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect()
