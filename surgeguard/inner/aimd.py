"""surgeguard's own inner AIMD: steer each window's p90 under the target latency.

The target is the one the controller's slow loop steers admitted p99 to: the SLO less
its headroom (``SURGEGUARD_INNER_HEADROOM``, 0.2 like the controller's default). The
inner loop reacts within a window or two; the controller keeps the ceiling.

The SLO alone would let the limit fill every queue up to the target, so it is bounded
by the knee (``surgeguard.inner.knee``): never over ``gain`` times the concurrency that
keeps the bottleneck busy (latency stays near ``gain`` x its own, far under the SLO, and
a spike meets a limit that is already right), and never cut for latency under what
keeps the bottleneck busy (such a cut costs goodput and cannot lower latency: a starved
CPU or a dependency slow on its own). ``knee_gain = 0`` leaves the SLO rule alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

from surgeguard.inner.climb import Climb
from surgeguard.inner.knee import Estimate, Knee, KneeState
from surgeguard.inner.window import Window, check_range


@dataclass(frozen=True)
class AimdState:
    """cooldown_until: seconds (monotonic) before which no further cut is made (the last
    cut has not shown its effect yet). recover_to: the limit before the first cut of an
    overload episode (requests; None: no episode). knee: the knee's filters.
    before_probe: the limit a knee probe interrupted (requests; None: no probe).
    last_cut: the cuts for latency of this overload episode, (the limit before the
    first, the limit after the last, the window mean latency before the first in
    seconds), to judge by their effect (None: none to judge). futile_until: seconds
    (monotonic) before which cuts for latency hold (they did not lower it).
    not_queueing: the mean latency (seconds) of the window that showed cuts futile;
    while latency stays near it the knee's cap is off (0: no such latency)."""

    cooldown_until: float = -math.inf
    recover_to: int | None = None
    knee: KneeState = field(default_factory=KneeState)
    before_probe: int | None = None
    last_cut: tuple[int, int, float] | None = None
    futile_until: float = -math.inf
    not_queueing: float = 0.0


# Cuts must lower the mean latency by at least this share of what queueing predicts (a
# cut to 60% of the limit should take at least 20% off it), else they were futile.
EVIDENCE = 0.5
# Cuts are judged once they add up to this share of the limit: a 10% cut's effect is
# within the noise of a window's mean.
JUDGED_FROM = 0.2


@dataclass(frozen=True)
class Aimd:
    """Additive increase, proportional decrease, on the window's p90 (surgeguard's own).

    - p90 over ``target_s``: cut to ``limit x max(0.5, min(backoff, target / p90))``
      (at least one less): a deep overload is fixed in one or two cuts, a shallow one
      by the backoff. Then no further cut for one p90 (at most ``max_cooldown_s``):
      the requests that finish meanwhile were admitted before the cut, and cutting on
      them again would overshoot. More than ``drop_share`` of the window failing
      (5xx) cuts by the backoff too: failures that answer fast hide latency.
    - p90 inside the band [(1 - hysteresis) x target, target]: hold.
    - under the band, grow only while the limit is in use (peak in flight at least
      ``in_use`` x limit): by 1, or by ``grow_factor`` (at least 1) while p90 is under
      ``fast_below`` x target. After a cut, while p90 is under ``fast_below`` x target
      (the overload is over) it grows by ``grow_factor`` back to where the cuts began
      even when light traffic leaves it unused, so the next spike meets it whole.
    - a window without a finished request holds. Always within [floor, ceiling].
    - the knee (``knee_gain`` > 0, with ``knee_spare`` requests over it): the limit is
      at most its ``high``, a cut for latency stops at its ``low`` (and holds there),
      and during its probe the limit is its ``probe``, then back where it was; with
      ``knee_climb`` its cap is also probed upward while latency is calm
      (``surgeguard.inner.climb``).
    - the evidence rule (``futile_hold_s`` > 0): once the cuts for latency of an
      episode add up to ``JUDGED_FROM`` of the limit and have shown their effect (after
      the cooldown), a p90 still over the target with a mean latency that fell by less
      than ``EVIDENCE`` of the cuts' share (latency the limit does not cause: a CPU
      others hold, a dependency slow on its own) undoes them and holds cuts for latency
      for ``futile_hold_s``. The knee's cap is off until the mean latency falls under
      half of that window's or cuts are seen to work (its Little's law would shrink
      with the throughput the cuts lost). Cuts for failures are not held.
    """

    name: ClassVar[str] = "aimd"

    target_s: float = 0.2
    backoff: float = 0.9
    hysteresis: float = 0.1
    in_use: float = 0.5
    fast_below: float = 0.5
    grow_factor: float = 1.1
    drop_share: float = 0.5
    max_cooldown_s: float = 0.5
    knee_gain: float = 1.5
    knee_spare: float = 3.0
    futile_hold_s: float = 5.0
    knee_climb: float = 1.0  # 0: no climb (a number, as SURGEGUARD_INNER_PARAMS gives)

    def __post_init__(self) -> None:
        check_range("target_s", self.target_s, 0.001, 600.0)
        check_range("backoff", self.backoff, 0.5, 1.0, open_high=True)
        check_range("hysteresis", self.hysteresis, 0.0, 0.5)
        check_range("in_use", self.in_use, 0.0, 1.0)
        check_range("fast_below", self.fast_below, 0.0, 1.0 - self.hysteresis)
        check_range("grow_factor", self.grow_factor, 1.0, 2.0)
        check_range("drop_share", self.drop_share, 0.0, 1.0)
        check_range("max_cooldown_s", self.max_cooldown_s, 0.0, 60.0)
        if self.knee_gain != 0:
            check_range("knee_gain", self.knee_gain, 1.0, 100.0)
        check_range("knee_spare", self.knee_spare, 0.0, 1000.0)
        check_range("futile_hold_s", self.futile_hold_s, 0.0, 600.0)
        if self.knee_climb not in (0, 1):
            raise ValueError(f"knee_climb must be 1 (on) or 0 (off), got {self.knee_climb:g}")

    @property
    def knee(self) -> Knee | None:
        if self.knee_gain == 0:
            return None
        climb = Climb() if self.knee_climb != 0 else None
        return Knee(gain=self.knee_gain, spare=int(self.knee_spare), climb=climb)

    def initial(self, limit: int) -> AimdState:
        return AimdState()

    def step(self, state: AimdState, w: Window) -> tuple[AimdState, int]:
        knee, estimate = self.knee, None
        if knee is not None:
            # How far latency may grow and stay calm, in the band under the target.
            calm_s = (1.0 - self.hysteresis) * self.target_s
            failing = w.drops > self.drop_share * w.completed
            room = calm_s / w.p90_s if w.seen and w.p90_s > 0 and not failing else 0.0
            knee_state, estimate = knee.update(state.knee, w, room=room)
            state = replace(state, knee=knee_state)
        if estimate is not None and estimate.probe is not None:
            before = w.limit if state.before_probe is None else state.before_probe
            return replace(state, before_probe=before), w.clamp(estimate.probe)
        if state.before_probe is not None:  # the probe is over: back where it was
            before, state = state.before_probe, replace(state, before_probe=None)
            w = replace(w, limit=w.clamp(before))
        state, wanted = self._slo_step(state, w, estimate)
        if state.not_queueing and w.seen and w.mean_s < 0.5 * state.not_queueing:
            state = replace(state, not_queueing=0.0)  # the latency it did not cause is gone
        if estimate is not None and not state.not_queueing:
            wanted = min(wanted, max(w.floor, estimate.high))
        new = w.clamp(wanted)
        if new < w.limit and w.seen and w.p90_s > self.target_s:
            # A cut for latency (the SLO rule's or the knee's): judged by its effect,
            # with the episode's earlier ones.
            cooldown = min(self.max_cooldown_s, w.p90_s)
            first = state.last_cut
            cut = (w.limit, new, w.mean_s) if first is None else (first[0], new, first[2])
            state = replace(state, last_cut=cut, cooldown_until=w.now + cooldown)
        return state, new

    def _slo_step(
        self, state: AimdState, w: Window, estimate: Estimate | None
    ) -> tuple[AimdState, int]:
        limit = w.clamp(w.limit)
        if not w.seen:
            return state, limit
        p90, target = w.p90_s, self.target_s
        over = p90 > target
        failing = w.drops > self.drop_share * w.completed
        if over or failing:
            if w.now < state.cooldown_until:
                return state, limit
            if over and not failing:
                state, held = self._evidence(state, w)
                if held is not None:
                    return state, held
            factor = max(0.5, min(self.backoff, target / p90)) if over else self.backoff
            new = w.clamp(min(limit - 1, math.floor(limit * factor)))
            if estimate is not None and over and not failing:
                # Under the knee's low a cut costs goodput and cannot lower latency.
                new = max(new, min(limit, estimate.low))
            if new >= limit:
                return state, limit  # at the floor (or the knee's low) already
            cooldown = min(self.max_cooldown_s, p90)
            recover_to = limit if state.recover_to is None else state.recover_to
            return replace(state, cooldown_until=w.now + cooldown, recover_to=recover_to), new
        state = replace(state, last_cut=None)  # under the target: nothing left to judge
        if p90 >= (1.0 - self.hysteresis) * target:
            return state, limit
        fast = p90 < self.fast_below * target
        # 40 x 1.1 is 44.00000000000001 in floats: the tiny nudge keeps it 44.
        faster = max(limit + 1, math.ceil(limit * self.grow_factor - 1e-9))
        if fast and state.recover_to is not None:
            goal = min(state.recover_to, w.ceiling)
            if limit < goal:
                return state, w.clamp(min(goal, faster))
            state = replace(state, recover_to=None)  # recovered: the episode is over
        if w.peak_in_flight < self.in_use * limit:
            return state, limit
        return state, w.clamp(faster if fast else limit + 1)

    def _evidence(self, state: AimdState, w: Window) -> tuple[AimdState, int | None]:
        """The evidence rule, for a window over the target: the state, and the limit to
        hold (the limit now, or the one before the futile cuts); None: a cut may go
        ahead."""
        if self.futile_hold_s == 0:
            return state, None
        if w.now < state.futile_until:
            return state, w.clamp(w.limit)
        if state.last_cut is None:
            return state, None
        before, after, mean_before = state.last_cut
        if w.limit != after:  # the knob moved it since: nothing to judge by
            return state, None
        predicted = 1.0 - after / before  # the share queueing would take off the latency
        if predicted < JUDGED_FROM:
            return state, None  # too small to judge yet
        if w.mean_s <= (1.0 - EVIDENCE * predicted) * mean_before:
            return replace(state, not_queueing=0.0), None  # they worked: go on cutting
        held = replace(
            state,
            last_cut=None,
            recover_to=None,
            futile_until=w.now + self.futile_hold_s,
            not_queueing=w.mean_s,
        )
        return held, w.clamp(before)
