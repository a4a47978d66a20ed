"""What the door records for the inner loop: every admitted request's latency, cheaply.

``record`` runs once per admitted request on the event loop, so it allocates nothing:
latencies go into a list allocated once (the float is the one the door computed for its
histogram anyway), and the drops and the peak in flight are plain integers. ``take``
runs once per window and does the sorting.
"""

from __future__ import annotations

import math

from surgeguard.inner.window import Window

# Latencies kept per window (requests): 4,096 in 100 ms is 40,000 requests/s, far past
# what one Python replica serves. Past it the count, the drops and the peak stay exact
# and the latency statistics come from the first 4,096 of the window.
CAPACITY = 4096


class WindowSamples:
    __slots__ = ("_capacity", "_latencies", "count", "drops", "peak")

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 requests, got {capacity}")
        self._latencies = [0.0] * capacity
        self._capacity = capacity
        self.count = 0  # requests finished in the window
        self.drops = 0  # of them, answered with a 5xx
        self.peak = 0  # most in flight at once, as seen when each finished

    def record(self, latency_s: float, status: int, in_flight: int) -> None:
        """One admitted request finished: ``latency_s`` seconds after admission, with
        ``status``, while ``in_flight`` requests (itself included) were in flight."""
        n = self.count
        if n < self._capacity:
            self._latencies[n] = latency_s
        self.count = n + 1
        if status >= 500:
            self.drops += 1
        if in_flight > self.peak:
            self.peak = in_flight

    def reset(self) -> None:
        """Forget the window so far."""
        self.count = self.drops = self.peak = 0

    def take(self, *, now: float, limit: int, floor: int, ceiling: int) -> Window:
        """The window so far as a ``Window`` (then a new one starts)."""
        kept = sorted(self._latencies[: min(self.count, self._capacity)])
        n = len(kept)
        nan = math.nan
        window = Window(
            now=now,
            limit=limit,
            floor=floor,
            ceiling=ceiling,
            completed=self.count,
            mean_s=sum(kept) / n if n else nan,
            p50_s=_quantile(kept, 0.5) if n else nan,
            p90_s=_quantile(kept, 0.9) if n else nan,
            min_s=kept[0] if n else nan,
            peak_in_flight=self.peak,
            drops=self.drops,
        )
        self.reset()
        return window


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank: a latency really seen)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
