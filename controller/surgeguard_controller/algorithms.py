"""Limit algorithms: pure objects that turn one sample into the next limit.

No clock reads, no I/O: time arrives as ``Sample.now`` (seconds). The controller
feeds each knob's algorithm the signals that mean congestion for that knob, and
turns the returned ``Update`` into a recorded decision. One interface, so the
benchmark can compare policies on one workload.

What an algorithm remembers between ticks is an explicit, frozen state:
``step(state, sample) -> (state, update)`` is a pure function of both, so the
controller can ask "would this cut?" and throw the answer's state away (a held
tick is then as if it had not been seen). ``update(sample)`` steps the algorithm's
own ``state`` and keeps the result, for callers that always commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

from surgeguard_controller.text import ms

CUT, GROW, HOLD = "cut", "grow", "hold"


@dataclass(frozen=True)
class Sample:
    """What an algorithm sees once per tick.

    now: seconds (monotonic). limit: the knob's value now. latency_s: the knob's
    latency signal (admitted p99, queue wait p99, dependency p99), NaN without data.
    target_s: what latency_s must stay under. peak_in_flight: highest concurrent use
    during the tick (requests or calls). overloaded: another congestion sign
    (timeouts, errors) with why in ``overload_reason``."""

    now: float
    limit: int
    latency_s: float
    target_s: float
    peak_in_flight: float
    overloaded: bool = False
    overload_reason: str = ""
    signal_label: str = "p99"  # names latency_s in reasons
    target_label: str = "target"  # names target_s in reasons
    target_note: str = ""  # said after the target: " (SLO 250 ms less 10% headroom)"
    # The work the knob lets through: a bulkhead's successful calls/s (NaN: not judged
    # by it); ``refusing``: the knob turns work away now (its bulkhead is full).
    throughput_per_s: float = math.nan
    refusing: bool = False

    def _compare(self, sign: str) -> str:
        return (
            f"{self.signal_label} {ms(self.latency_s)} {sign} {self.target_label} "
            f"{ms(self.target_s)}{self.target_note}"
        )

    def over(self) -> str:
        return self._compare(">")

    def under(self) -> str:
        return self._compare("<")


@dataclass(frozen=True)
class Update:
    limit: int
    action: str  # cut | grow | hold
    why: str  # the condition, readable: "p99 412 ms > target 250 ms"


class LimitAlgorithm(Protocol):
    name: str
    state: Any  # the algorithm's own frozen state type

    def step(self, state: Any, sample: Sample) -> tuple[Any, Update]: ...

    def update(self, sample: Sample) -> Update: ...


def _check_bounds(minimum: int, maximum: int) -> None:
    if not 0 <= minimum <= maximum:
        raise ValueError(f"bounds must satisfy 0 <= min <= max, got [{minimum}, {maximum}]")


class Static:
    """Never moves: the baseline a static deployment would have."""

    name = "static"
    state: None = None

    def step(self, state: None, sample: Sample) -> tuple[None, Update]:
        return None, Update(sample.limit, HOLD, "static policy")

    def update(self, sample: Sample) -> Update:
        return self.step(None, sample)[1]


@dataclass(frozen=True)
class AIMDState:
    """last_cut_at: seconds (monotonic) of the last cut. recover_to: the limit before
    the first cut of an overload episode: once the overload is over (latency far under
    target) the limit returns there even if the traffic left is too light to "use" it,
    so the next spike meets it whole."""

    last_cut_at: float = -math.inf
    recover_to: int | None = None


class AIMD:
    """Additive increase, multiplicative decrease, with the guards an SRE expects.

    - congestion (latency over target, or ``overloaded``): multiply by ``backoff``;
      then no further cut for ``cooldown_s`` so the cut can show its effect;
    - hold while latency is inside the band [(1 - hysteresis) * target, target];
    - grow by ``step`` only while the limit is in use (peak >= ``in_use`` * limit),
      so a quiet service does not drift to the maximum;
    - ``proportional``: when latency is far over target, cut by target / latency
      (bounded to [0.5, backoff]) so a deep overload is fixed in one or two ticks;
    - while latency is far under target (below ``fast_below`` x target: the
      overload that caused a cut is over), grow multiplicatively (``slow_start``
      per tick), back to where the cuts began even if light traffic does not use
      it, so recovery takes seconds, not minutes; nearer the target, grow by
      ``step`` only, so a limit under sustained load creeps instead of jumping;
    - clamp to [minimum, maximum]."""

    name = "aimd"

    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        backoff: float = 0.9,
        step: int = 2,
        hysteresis: float = 0.1,
        cooldown_s: float = 2.0,
        in_use: float = 0.5,
        slow_start: float = 1.25,
        fast_below: float = 0.5,
        proportional: bool = False,
    ) -> None:
        _check_bounds(minimum, maximum)
        if not 0.5 <= backoff < 1.0:
            raise ValueError(f"backoff must be in [0.5, 1), got {backoff}")
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0 seconds, got {cooldown_s}")
        if not 0.0 <= in_use <= 1.0:
            raise ValueError(f"in_use must be in [0, 1], got {in_use}")
        if slow_start < 1.0:
            raise ValueError(f"slow_start must be >= 1, got {slow_start}")
        if not 0.0 <= fast_below < 1.0 - hysteresis:
            raise ValueError(f"fast_below must be in [0, {1.0 - hysteresis:g}), got {fast_below}")
        self.minimum, self.maximum = minimum, maximum
        self.backoff, self.grow_step, self.hysteresis = backoff, step, hysteresis
        self.cooldown_s, self.in_use, self.slow_start = cooldown_s, in_use, slow_start
        self.proportional = proportional
        self.fast_below = fast_below
        self.state = AIMDState()

    def _clamp(self, value: float) -> int:
        return max(self.minimum, min(self.maximum, int(value)))

    def update(self, sample: Sample) -> Update:
        self.state, update = self.step(self.state, sample)
        return update

    def step(self, state: AIMDState, s: Sample) -> tuple[AIMDState, Update]:
        limit = self._clamp(s.limit)
        latency_known = not math.isnan(s.latency_s)
        over = latency_known and s.latency_s > s.target_s
        if over or s.overloaded:
            why = s.over() if over else s.overload_reason or "overloaded"
            if s.now - state.last_cut_at < self.cooldown_s:
                return state, Update(limit, HOLD, f"{why}, cooling down after the last cut")
            if limit <= self.minimum:
                return state, Update(limit, HOLD, f"{why}, already at the minimum {self.minimum}")
            state = AIMDState(
                last_cut_at=s.now,
                recover_to=limit if state.recover_to is None else state.recover_to,
            )
            factor = self.backoff
            if self.proportional and over:
                # Far over target: cut to where the latency would fit, in one step
                # (never below half), instead of many 10% steps a cool-down apart.
                factor = max(0.5, min(self.backoff, s.target_s / s.latency_s))
            new = min(limit - 1, self._clamp(math.floor(limit * factor)))
            return state, Update(max(new, self.minimum), CUT, why)
        if not latency_known:
            return state, Update(limit, HOLD, "no admitted traffic to judge by")
        if s.latency_s >= (1.0 - self.hysteresis) * s.target_s:
            return state, Update(
                limit,
                HOLD,
                f"{s.signal_label} {ms(s.latency_s)} within {self.hysteresis:.0%} of "
                f"{s.target_label} {ms(s.target_s)}",
            )
        fast = s.latency_s < self.fast_below * s.target_s
        if fast and state.recover_to is not None:
            if limit < state.recover_to:
                new = min(
                    state.recover_to,
                    max(limit + self.grow_step, math.ceil(limit * self.slow_start)),
                )
                return state, Update(
                    self._clamp(new),
                    GROW,
                    f"{s.under()}, recovering toward {state.recover_to} (before the overload)",
                )
            state = replace(state, recover_to=None)  # recovered: the episode is over
        if s.peak_in_flight < self.in_use * limit:
            return state, Update(
                limit,
                HOLD,
                f"limit not in use (peak {s.peak_in_flight:.0f} < {self.in_use:.0%} of {limit})",
            )
        if limit >= self.maximum:
            return state, Update(limit, HOLD, f"at the maximum {self.maximum}")
        why = s.under()
        if fast:
            new = max(limit + self.grow_step, math.ceil(limit * self.slow_start))
            return state, Update(self._clamp(new), GROW, f"{why}, growing fast")
        return state, Update(self._clamp(limit + self.grow_step), GROW, why)


@dataclass(frozen=True)
class GradientState:
    """long_latency_s: the latency's long-term average, seconds (None before the first
    sample). estimate: the unrounded limit, requests (None: start from the knob)."""

    long_latency_s: float | None = None
    estimate: float | None = None


class Gradient:
    """Gradient-style (after Netflix's Gradient2): compare the latency now with its
    long-term average; shrink in proportion when it rises, grow by a small queue
    allowance when it does not. The SLO caps the gradient too, so a service whose
    latency is steadily bad still backs off.

    gradient = clamp(tolerance * long / short, 0.5, 1), then also <= target / short;
    new = limit * gradient + sqrt(limit), smoothed by ``smoothing``."""

    name = "gradient"

    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        long_window: int = 60,
        in_use: float = 0.5,
    ) -> None:
        _check_bounds(minimum, maximum)
        if tolerance < 1.0:
            raise ValueError(f"tolerance must be >= 1, got {tolerance}")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if long_window < 1:
            raise ValueError(f"long_window must be >= 1 samples, got {long_window}")
        self.minimum, self.maximum = minimum, maximum
        self.tolerance, self.smoothing, self.in_use = tolerance, smoothing, in_use
        self._alpha = 2.0 / (long_window + 1)
        self.state = GradientState()

    def update(self, sample: Sample) -> Update:
        self.state, update = self.step(self.state, sample)
        return update

    def step(self, state: GradientState, s: Sample) -> tuple[GradientState, Update]:
        limit = max(self.minimum, min(self.maximum, s.limit))
        if math.isnan(s.latency_s) or s.latency_s <= 0:
            return state, Update(limit, HOLD, "no admitted traffic to judge by")
        short = s.latency_s
        long = short if state.long_latency_s is None else state.long_latency_s
        # Let the long average follow, but never let a bad spell become the new normal.
        state = replace(state, long_latency_s=long + self._alpha * (min(short, s.target_s) - long))
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        gradient = min(gradient, s.target_s / short)
        if s.overloaded:
            gradient = min(gradient, 0.9)
        estimate = state.estimate if state.estimate is not None else float(limit)
        if gradient >= 1.0 and s.peak_in_flight < self.in_use * limit:
            return state, Update(
                limit,
                HOLD,
                f"limit not in use (peak {s.peak_in_flight:.0f} < {self.in_use:.0%} of {limit})",
            )
        wanted = limit * gradient + math.sqrt(limit)
        estimate = estimate * (1 - self.smoothing) + wanted * self.smoothing
        if gradient < 1.0:
            estimate = min(estimate, wanted)  # cut now, smooth only the growth
        estimate = max(float(self.minimum), min(float(self.maximum), estimate))
        state = replace(state, estimate=estimate)
        new = int(estimate)
        why = (
            f"{s.signal_label} {ms(short)} vs long-term {ms(long)} and "
            f"{s.target_label} {ms(s.target_s)}: gradient {gradient:.2f}"
        )
        action = CUT if new < limit else GROW if new > limit else HOLD
        return state, Update(new, action, why)


ALGORITHMS = ("aimd", "static", "gradient")


def build_algorithm(
    name: str,
    minimum: int,
    maximum: int,
    *,
    backoff: float = 0.9,
    cooldown_s: float = 2.0,
    proportional: bool = False,
) -> LimitAlgorithm:
    if name == "aimd":
        return AIMD(
            minimum, maximum, backoff=backoff, cooldown_s=cooldown_s, proportional=proportional
        )
    if name == "static":
        return Static()
    if name == "gradient":
        return Gradient(minimum, maximum)
    raise ValueError(f"unknown algorithm {name!r}: allowed are {', '.join(ALGORITHMS)}")
