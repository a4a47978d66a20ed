"""Envoy's adaptive concurrency filter, gradient controller, per window.

Source: Envoy's ``envoy.filters.http.adaptive_concurrency`` documentation and its
``GradientControllerConfig`` (source/extensions/filters/http/adaptive_concurrency/
controller/gradient_controller.cc). One window here is one
``concurrency_update_interval`` (``SURGEGUARD_INNER_WINDOW_MS``, 100 ms).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import ClassVar

from surgeguard.inner.window import Window, check_range

# Envoy re-measures minRTT at once when the limit was set to its minimum this many
# windows in a row: the last minRTT is probably wrong.
CONSECUTIVE_MIN_WINDOWS = 5


@dataclass(frozen=True)
class EnvoyState:
    """measuring: inside a minRTT window (the limit pinned at ``min_concurrency``).
    min_rtt_s: the last minRTT, seconds (NaN before the first). samples, sample_sum_s:
    requests gathered in the minRTT window and the sum of their windows' p50 weighted
    by count (seconds). deferred: the limit to go back to after it (requests).
    next_measure_at: seconds (monotonic) when the next minRTT window starts.
    at_min: windows in a row the limit was set to ``min_concurrency``. measures: minRTT
    windows so far (draws the next jitter, so a step stays pure)."""

    measuring: bool = True
    min_rtt_s: float = math.nan
    samples: int = 0
    sample_sum_s: float = 0.0
    deferred: int = 0
    next_measure_at: float = math.inf
    at_min: int = 0
    measures: int = 0


@dataclass(frozen=True)
class EnvoyGradient:
    """Envoy's gradient controller.

    minRTT: measured in a minRTT window, where the limit is pinned to
    ``min_concurrency`` (3) until ``request_count`` (50) requests have finished; minRTT
    is then their latency at the window percentile (p50, Envoy's default: here the
    count-weighted mean of the windows' p50). The next minRTT window starts ``interval_s``
    later plus a jitter drawn in [0, ``jitter`` x interval) (15%, Envoy's default), or at
    once when the limit was set to its minimum for 5 windows in a row. It starts with one.

    Each window otherwise, with sample = the window's p50: gradient = (minRTT + buffer x
    minRTT) / sample bounded to [0.5, 2] (buffer 25%, Envoy's default); limit = gradient
    x limit; new = limit + sqrt(limit) (the headroom), bounded to [min_concurrency,
    max_limit] (1000) and the window's [floor, ceiling]. A window where nothing
    finished changes nothing. ``interval_s`` has no Envoy default (it is required);
    60 s is the common choice. ``seed`` draws the jitter (so a run replays)."""

    name: ClassVar[str] = "envoy-gradient"

    interval_s: float = 60.0
    request_count: float = 50.0
    jitter: float = 0.15
    min_concurrency: float = 3.0
    buffer: float = 0.25
    max_limit: float = 1000.0
    seed: float = 0.0

    def __post_init__(self) -> None:
        check_range("interval_s", self.interval_s, 0.1, 86_400.0)
        check_range("request_count", self.request_count, 1.0, 1_000_000.0)
        check_range("jitter", self.jitter, 0.0, 1.0)
        check_range("min_concurrency", self.min_concurrency, 1.0, 10_000.0)
        check_range("buffer", self.buffer, 0.0, 10.0)
        check_range("max_limit", self.max_limit, 1.0, 1_000_000.0)

    def initial(self, limit: int) -> EnvoyState:
        return EnvoyState(deferred=limit)

    def _pinned(self, w: Window) -> int:
        return w.clamp(self.min_concurrency)

    def _next_measure(self, now: float, measures: int) -> float:
        draw = random.Random(f"envoy:{self.seed:g}:{measures}").random()
        return now + self.interval_s + draw * self.jitter * self.interval_s

    def step(self, state: EnvoyState, w: Window) -> tuple[EnvoyState, int]:
        if state.measuring:
            return self._measure(state, w)
        if w.now >= state.next_measure_at:
            return self._enter(state, w.clamp(w.limit), w)
        if not w.seen:
            return state, w.clamp(w.limit)
        buffered = state.min_rtt_s * (1.0 + self.buffer)
        gradient = max(0.5, min(2.0, buffered / w.p50_s)) if w.p50_s > 0 else 2.0
        limit = w.limit * gradient
        new = int(limit + math.sqrt(limit))
        new = max(int(self.min_concurrency), min(int(self.max_limit), new))
        new = w.clamp(new)
        floor = self._pinned(w)
        at_min = state.at_min + 1 if w.limit == floor and new == floor else 0
        state = replace(state, at_min=at_min)
        if at_min >= CONSECUTIVE_MIN_WINDOWS:
            return self._enter(state, new, w)
        return state, new

    def _enter(self, state: EnvoyState, limit: int, w: Window) -> tuple[EnvoyState, int]:
        """Start a minRTT window: remember ``limit``, pin the minimum."""
        entered = replace(
            state, measuring=True, samples=0, sample_sum_s=0.0, deferred=limit, at_min=0
        )
        return entered, self._pinned(w)

    def _measure(self, state: EnvoyState, w: Window) -> tuple[EnvoyState, int]:
        # Only requests sent inside the minRTT window count (as Envoy samples them): a
        # window that still saw more in flight than the pinned minimum also finished
        # requests admitted before the pin, with the queue's latency.
        if w.seen and w.peak_in_flight <= self._pinned(w):
            state = replace(
                state,
                samples=state.samples + w.completed,
                sample_sum_s=state.sample_sum_s + w.p50_s * w.completed,
            )
        if state.samples < self.request_count:
            return state, self._pinned(w)
        measures = state.measures + 1
        done = replace(
            state,
            measuring=False,
            min_rtt_s=state.sample_sum_s / state.samples,
            samples=0,
            sample_sum_s=0.0,
            next_measure_at=self._next_measure(w.now, measures),
            measures=measures,
        )
        return done, w.clamp(state.deferred)
