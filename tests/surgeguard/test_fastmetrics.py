"""The lock-free metrics export exactly what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.fastmetrics import LocalCounter, LocalFamilies, LocalHistogram

EDGES = (0.0, 0.01, 0.25, 1.0)
VALUES = [0.0, 0.0, 0.005, 0.01, 0.2, 0.25, 0.3, 5.0]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_histogram_and_counter_match_prometheus_client() -> None:
    reference = CollectorRegistry()
    hist = Histogram("h_seconds", "h", ["route"], buckets=EDGES, registry=reference)
    count = Counter("c", "c", ["reason"], registry=reference)
    for v in VALUES:
        hist.labels("feed").observe(v)
    count.labels("queue_full").inc(3)

    ours = CollectorRegistry()
    families = LocalFamilies()
    local_hist = LocalHistogram(EDGES)
    local_count = LocalCounter()
    families.histogram("h_seconds", "h", ["route"], {("feed",): local_hist})
    families.counter("c", "c", ["reason"], {("queue_full",): local_count})
    ours.register(families)
    for v in VALUES:
        local_hist.observe(v)
    local_count.inc(3)

    assert samples(ours) == samples(reference)


def test_zero_waits_counted_on_the_side_land_in_the_zero_bucket() -> None:
    hist = LocalHistogram(EDGES)
    hist.extra_at_zero = 5
    hist.observe(0.3)
    buckets, total = hist.cumulative()
    assert buckets[0] == ("0.0", 5.0)
    assert buckets[-1] == ("+Inf", 6.0) and total == 6.0
    assert hist.sum == 0.3
