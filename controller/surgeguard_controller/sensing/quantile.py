"""Quantiles from histogram buckets, interpolated exactly as Prometheus's
``histogram_quantile`` does, so the controller and a Grafana panel agree.

Buckets are cumulative ``(upper_bound, count)`` pairs; the last must be ``+Inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Bucket = tuple[float, float]


def histogram_quantile(q: float, buckets: Sequence[Bucket]) -> float:
    """The ``q``-quantile (0..1) in the buckets' unit (seconds here); NaN without data.

    Rules copied from Prometheus: q < 0 -> -Inf, q > 1 -> +Inf; fewer than two buckets
    or no observations -> NaN; the rank falling in the +Inf bucket returns the highest
    finite bound; inside the first bucket the lower bound is 0 (unless its upper bound
    is <= 0, which is returned as is); otherwise linear interpolation inside the bucket.
    Non-monotonic counts (a scrape racing an observation) are made monotonic first.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts = _monotonic([c for _, c in ordered])
    bounds = [b for b, _ in ordered]
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if index == 0 else bounds[index - 1]
    below = 0.0 if index == 0 else counts[index - 1]
    in_bucket = counts[index] - below
    if in_bucket == 0:
        return bounds[index]
    return start + (bounds[index] - start) * ((rank - below) / in_bucket)


def _monotonic(counts: list[float]) -> list[float]:
    fixed: list[float] = []
    highest = 0.0
    for count in counts:
        highest = max(highest, count)
        fixed.append(highest)
    return fixed


def bucket_deltas(current: Sequence[Bucket], previous: Sequence[Bucket] | None) -> list[Bucket]:
    """Observations between two reads of one histogram, per bucket.

    A counter reset (a restarted replica: the total went down) means everything in
    ``current`` is new, so ``current`` itself is the delta."""
    if previous is None:
        return list(current)
    before = dict(previous)
    if current and before and current[-1][1] < before.get(current[-1][0], 0.0):
        return list(current)
    return [(bound, max(0.0, count - before.get(bound, 0.0))) for bound, count in current]
