"""One read of a replica's metrics, as a flat table of samples.

Both signal sources produce a ``Scrape``: the direct one parses a replica's
``/metrics`` text; the Prometheus one fills it from query results. Everything
downstream (deltas, quantiles, signals) only sees ``Scrape``s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from surgeguard_controller.sensing.quantile import Bucket

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """Samples of one replica at one moment. ``at``: seconds (monotonic clock)."""

    at: float
    samples: Mapping[tuple[str, Labels], float] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str, at: float) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
        return cls(at, samples)

    def _matching(self, name: str, where: Mapping[str, str]) -> Iterable[tuple[Labels, float]]:
        wanted = set(where.items())
        for (sample_name, labels), value in self.samples.items():
            if sample_name == name and wanted <= labels:
                yield labels, value

    def total(self, name: str, **where: str) -> float:
        """Sum of every sample named ``name`` whose labels include ``where``."""
        return sum(value for _, value in self._matching(name, where))

    def by_label(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Sums of ``name`` grouped by one label's value."""
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self._matching(name, where):
            key = dict(labels).get(label)
            if key is not None:
                sums[key] += value
        return dict(sums)

    def buckets(self, histogram: str, **where: str) -> list[Bucket]:
        """Cumulative buckets of a histogram, summed over every other label."""
        by_bound: dict[float, float] = defaultdict(float)
        for labels, value in self._matching(f"{histogram}_bucket", where):
            bound = dict(labels).get("le")
            if bound is not None:
                by_bound[math.inf if bound == "+Inf" else float(bound)] += value
        return sorted(by_bound.items())

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            dict(labels)[label] for labels, _ in self._matching(name, {}) if label in dict(labels)
        }
