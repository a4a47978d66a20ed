"""Lock-free counters and histograms for the request path, exported at scrape time.

``prometheus_client``'s own ``inc``/``observe`` take a lock and cost about half a
microsecond each; on the admission path that was half of the middleware's cost.
A service runs its request path on one event loop, so plain integers are enough:
these objects only add, and a ``Collector`` turns them into the usual Prometheus
families (same names, labels and bucket semantics) when someone scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class LocalCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LocalHistogram:
    """Buckets by upper edge (``le``, inclusive), like Prometheus; the last is +Inf."""

    __slots__ = ("counts", "edges", "extra_at_zero", "sum")

    def __init__(self, edges: Sequence[float]) -> None:
        self.edges = tuple(edges)
        self.counts = [0] * (len(self.edges) + 1)
        self.sum = 0.0
        self.extra_at_zero = 0  # observations of exactly 0 counted elsewhere (see queue wait)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.edges, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """(buckets as (le, cumulative count), total count)."""
        running = 0
        buckets = []
        for i, edge in enumerate(self.edges):
            running += self.counts[i] + (self.extra_at_zero if i == 0 else 0)
            buckets.append((_le(edge), float(running)))
        running += self.counts[-1]
        buckets.append(("+Inf", float(running)))
        return buckets, float(running)


def _le(edge: float) -> str:
    # Prometheus clients print edges as floats: 0.25, 1.0, 10.0.
    return repr(float(edge))


class LocalFamilies(Collector):
    """Exports labelled ``LocalCounter``s and ``LocalHistogram``s as metric families."""

    def __init__(self) -> None:
        self._counters: list[
            tuple[str, str, tuple[str, ...], dict[tuple[str, ...], LocalCounter]]
        ] = []
        self._histograms: list[
            tuple[str, str, tuple[str, ...], dict[tuple[str, ...], LocalHistogram]]
        ] = []

    def counter(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        children: dict[tuple[str, ...], LocalCounter],
    ) -> None:
        self._counters.append((name, doc, tuple(labels), children))

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        children: dict[tuple[str, ...], LocalHistogram],
    ) -> None:
        self._histograms.append((name, doc, tuple(labels), children))

    def collect(self) -> Iterator[Metric]:
        for name, doc, labels, counters in self._counters:
            counter_family = CounterMetricFamily(name, doc, labels=list(labels))
            for values, counter in counters.items():
                counter_family.add_metric(list(values), counter.value)
            yield counter_family
        for name, doc, labels, histograms in self._histograms:
            histogram_family = HistogramMetricFamily(name, doc, labels=list(labels))
            for values, histogram in histograms.items():
                buckets, _ = histogram.cumulative()
                histogram_family.add_metric(list(values), buckets, histogram.sum)
            yield histogram_family
