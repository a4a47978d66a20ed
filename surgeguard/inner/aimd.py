"""surgeguard's own inner AIMD: steer each window's p90 under the target latency.

The target is the one the controller's slow loop steers admitted p99 to: the SLO less
its headroom (``SURGEGUARD_INNER_HEADROOM``, 0.2 like the controller's default). The
inner loop reacts within a window or two; the controller keeps the ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from surgeguard.inner.window import Window, check_range


@dataclass(frozen=True)
class AimdState:
    """cooldown_until: seconds (monotonic) before which no further cut is made (the last
    cut has not shown its effect yet). recover_to: the limit before the first cut of an
    overload episode (requests; None: no episode)."""

    cooldown_until: float = -math.inf
    recover_to: int | None = None


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

    def __post_init__(self) -> None:
        check_range("target_s", self.target_s, 0.001, 600.0)
        check_range("backoff", self.backoff, 0.5, 1.0, open_high=True)
        check_range("hysteresis", self.hysteresis, 0.0, 0.5)
        check_range("in_use", self.in_use, 0.0, 1.0)
        check_range("fast_below", self.fast_below, 0.0, 1.0 - self.hysteresis)
        check_range("grow_factor", self.grow_factor, 1.0, 2.0)
        check_range("drop_share", self.drop_share, 0.0, 1.0)
        check_range("max_cooldown_s", self.max_cooldown_s, 0.0, 60.0)

    def initial(self, limit: int) -> AimdState:
        return AimdState()

    def step(self, state: AimdState, w: Window) -> tuple[AimdState, int]:
        limit = w.clamp(w.limit)
        if not w.seen:
            return state, limit
        p90, target = w.p90_s, self.target_s
        over = p90 > target
        failing = w.drops > self.drop_share * w.completed
        if over or failing:
            if w.now < state.cooldown_until:
                return state, limit
            factor = max(0.5, min(self.backoff, target / p90)) if over else self.backoff
            new = w.clamp(min(limit - 1, math.floor(limit * factor)))
            if new >= limit:
                return state, limit  # at the floor already
            cooldown = min(self.max_cooldown_s, p90)
            recover_to = limit if state.recover_to is None else state.recover_to
            return AimdState(cooldown_until=w.now + cooldown, recover_to=recover_to), new
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
