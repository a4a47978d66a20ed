"""Netflix concurrency-limits' AIMD, Vegas and Gradient2, in their windowed form.

Source: github.com/Netflix/concurrency-limits, ``concurrency-limits-core``,
``limit/AIMDLimit.java``, ``limit/VegasLimit.java``, ``limit/Gradient2Limit.java``,
fed the way ``limit/WindowedLimit.java`` feeds them: once per window, with the
window's average latency (``AverageSampleWindow``, the default), the most requests in
flight during it and whether any request was dropped. The formulas and defaults are
the published ones; where this module has to choose (a bound, a window statistic) its
docstring says so. Every limit is clamped to the window's [floor, ceiling] on top of
the algorithm's own bounds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import ClassVar

from surgeguard.inner.window import Window, check_range, synced


@dataclass(frozen=True)
class NetflixAimd:
    """``AIMDLimit``: on a drop, or when the window's mean latency is over
    ``timeout_s``, multiply by ``backoff`` (at least one less, never under 1); else, when
    at least half the limit was in use (``inflight * 2 >= limit``), add 1; else hold.
    Defaults as published: backoff 0.9, timeout 5 s (tune the timeout to the latency
    that means trouble: the SLO, say). The state is the limit itself (stateless)."""

    name: ClassVar[str] = "netflix-aimd"

    backoff: float = 0.9
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_range("backoff", self.backoff, 0.5, 1.0, open_high=True)
        check_range("timeout_s", self.timeout_s, 0.0001, 600.0)

    def initial(self, limit: int) -> None:
        return None

    def step(self, state: None, w: Window) -> tuple[None, int]:
        limit = w.clamp(w.limit)
        if not w.seen:
            return state, limit  # WindowedLimit feeds no empty window
        if w.drops or w.mean_s > self.timeout_s:
            return state, w.clamp(max(1, min(limit - 1, int(limit * self.backoff))))
        if w.peak_in_flight * 2 >= limit:
            return state, w.clamp(limit + 1)
        return state, limit


def log10_root(limit: int) -> int:
    """``Log10RootFunction``: max(1, int(log10(limit))) below 1000, int(sqrt(limit))
    from 1000 on (as published: the table covers 0..999, the rest is a square root)."""
    if limit < 1000:
        return max(1, int(math.log10(limit))) if limit > 0 else 1
    return int(math.sqrt(limit))


@dataclass(frozen=True)
class VegasState:
    """estimate: the unrounded limit (requests). rtt_noload_s: the no-load latency,
    seconds (0: none yet). probe_count: windows since the last probe. probe_jitter:
    this probe period's share of ``probe_multiplier x limit``, in [0.5, 1).
    probes: probes so far (draws the next jitter, so a step stays pure)."""

    estimate: float
    rtt_noload_s: float = 0.0
    probe_count: int = 0
    probe_jitter: float = 0.75
    probes: int = 0


@dataclass(frozen=True)
class Vegas:
    """``VegasLimit`` (TCP Vegas): queue = ceil(limit x (1 - rtt_noload / rtt)), with
    rtt the window's mean latency.

    Thresholds scale with the limit: threshold = log10root(limit), alpha = 3x it,
    beta = 6x it. With no drop and at least half the limit in use: queue <= threshold:
    limit + beta; queue < alpha: limit + log10root; queue > beta: limit - log10root;
    else hold. A drop: limit - log10root. Then smoothed (``smoothing``, 1.0: none)
    and bounded by ``max_limit`` (published defaults: 1000, smoothing 1.0).

    rtt_noload is the smallest latency seen: in the published per-request form it is
    the smallest sample, so here it is the smallest window minimum (``Window.min_s``),
    and a window that sets a new minimum only records it, as there. Every
    ``probe_multiplier x limit`` windows (30, times a jitter drawn in [0.5, 1)) it is
    reset to the window's minimum, so a dependency that got slower for good is
    followed up."""

    name: ClassVar[str] = "vegas"

    probe_multiplier: float = 30.0
    smoothing: float = 1.0
    max_limit: float = 1000.0
    seed: float = 0.0

    def __post_init__(self) -> None:
        check_range("probe_multiplier", self.probe_multiplier, 1.0, 10_000.0)
        check_range("smoothing", self.smoothing, 0.01, 1.0)
        check_range("max_limit", self.max_limit, 1.0, 1_000_000.0)

    def initial(self, limit: int) -> VegasState:
        return VegasState(float(limit), probe_jitter=self._jitter(0))

    def _jitter(self, probes: int) -> float:
        # ThreadLocalRandom.nextDouble(0.5, 1) in the original; seeded here, so a run
        # (and a test) can be replayed.
        return random.Random(f"vegas:{self.seed:g}:{probes}").uniform(0.5, 1.0)

    def step(self, state: VegasState, w: Window) -> tuple[VegasState, int]:
        estimate = synced(state.estimate, w)
        if not w.seen:
            return replace(state, estimate=estimate), w.clamp(estimate)
        count = state.probe_count + 1
        if state.probe_jitter * self.probe_multiplier * estimate <= count:
            probes = state.probes + 1
            return VegasState(estimate, w.min_s, 0, self._jitter(probes), probes), w.clamp(estimate)
        state = replace(state, estimate=estimate, probe_count=count)
        if state.rtt_noload_s == 0.0 or w.min_s < state.rtt_noload_s:
            return replace(state, rtt_noload_s=w.min_s), w.clamp(estimate)

        queue = math.ceil(estimate * (1.0 - state.rtt_noload_s / w.mean_s))
        lg = log10_root(int(estimate))
        if w.drops:
            new = estimate - lg
        elif w.peak_in_flight * 2 < estimate:
            return state, w.clamp(estimate)  # no upward drift when far from the limit
        elif queue <= lg:
            new = estimate + 6 * lg  # no queueing: grow by beta
        elif queue < 3 * lg:
            new = estimate + lg
        elif queue > 6 * lg:
            new = estimate - lg
        else:
            return state, w.clamp(estimate)  # between alpha and beta: the sweet spot
        new = max(1.0, min(self.max_limit, new))
        new = (1.0 - self.smoothing) * estimate + self.smoothing * new
        new = float(max(w.floor, min(w.ceiling, new)))
        return replace(state, estimate=new), w.clamp(new)


@dataclass(frozen=True)
class Gradient2State:
    """estimate: the unrounded limit (requests). long_rtt_s: the long-term latency,
    an exponential average over ``long_window`` windows after a plain mean of the first
    ``warmup`` (seconds; 0 before any). samples: windows averaged so far."""

    estimate: float
    long_rtt_s: float = 0.0
    samples: int = 0


@dataclass(frozen=True)
class Gradient2:
    """``Gradient2Limit``: compare the window's mean latency (short) with its long-term
    average (long).

    gradient = max(0.5, min(1.0, tolerance x long / short)); new = limit x gradient +
    queue_size, with queue_size = sqrt(limit); then smoothed: limit x (1 - smoothing) +
    new x smoothing. When long / short > 2 (latency back to normal after a long
    overload) the long average decays by 0.95 at once. While under half the limit is
    in use the limit holds. Published defaults: tolerance 1.5, smoothing 0.2, long
    window 600 (samples; here windows), warm-up 10; the published queue size is a
    function of the limit (4 by default, sqrt(limit) in the README's example): sqrt
    here."""

    name: ClassVar[str] = "gradient2"

    tolerance: float = 1.5
    smoothing: float = 0.2
    long_window: float = 600.0
    warmup: float = 10.0

    def __post_init__(self) -> None:
        check_range("tolerance", self.tolerance, 1.0, 10.0)
        check_range("smoothing", self.smoothing, 0.01, 1.0)
        check_range("long_window", self.long_window, 1.0, 1_000_000.0)
        check_range("warmup", self.warmup, 0.0, 1_000_000.0)

    def initial(self, limit: int) -> Gradient2State:
        return Gradient2State(float(limit))

    def _long(self, state: Gradient2State, short: float) -> float:
        if state.samples < self.warmup:  # ExpAvgMeasurement: a plain mean at first
            return (state.long_rtt_s * state.samples + short) / (state.samples + 1)
        factor = 2.0 / (self.long_window + 1.0)
        return state.long_rtt_s * (1.0 - factor) + short * factor

    def step(self, state: Gradient2State, w: Window) -> tuple[Gradient2State, int]:
        estimate = synced(state.estimate, w)
        if not w.seen or w.mean_s <= 0:
            return replace(state, estimate=estimate), w.clamp(estimate)
        short = w.mean_s
        long = self._long(state, short)
        if long / short > 2.0:
            long *= 0.95
        state = Gradient2State(estimate, long, state.samples + 1)
        if w.peak_in_flight < estimate / 2.0:
            return state, w.clamp(estimate)  # application-limited: do not grow
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        new = estimate * gradient + math.sqrt(estimate)
        new = estimate * (1.0 - self.smoothing) + new * self.smoothing
        new = float(max(w.floor, min(w.ceiling, new)))
        return replace(state, estimate=new), w.clamp(new)
