"""Whether more concurrency still buys throughput: the knee's probe upward.

The knee (``surgeguard.inner.knee``) caps the limit at a gain over Little's law, rate x
base. Two things make that cap too low, and then it holds itself there, because the
rate it sees is the rate its own cap allows:

- a base from the smallest window mean of a route mix is the mix's fastest moment, not
  its typical request (a window of cache hits among db calls);
- a latency no queue causes rises after the base was measured (a CPU others take, a
  network hop that got slower): every request takes longer, so the same throughput
  needs more in flight, and the cap, still computed from the old base, forbids it.

Both look like a knee that is right, and only an experiment can tell them apart (as
TCP's BBR finds more bandwidth by sending faster for a round trip). So while the cap
binds and latency is calm, the limit goes up by ``share`` (1.5x; less when latency
would leave the calm band before that, and no probe under 1.2x) for a few windows:
one to fill, ``measure_windows`` to count what completes. The bottleneck had room
when the requests that succeed per second rose by at least ``evidence`` of the step
(half of 50%: 25%) over the ``before_windows`` before the probe and over the
``after_windows`` after it, back at the cap (a demand that was rising anyway beats
only the first; a 100 ms window of 20 requests is noisy by a fifth, so the step is
large and the windows several). Then the cap's ``lift`` grows by the step and the
next probe comes soon (slow start). Otherwise the cap was about right: the lift
shrinks by a quarter of a step towards 1, and the next probe waits twice as long as
the last, from ``every_s`` up to ``2**max_backoff`` times it: a bottleneck that stays
saturated pays more queueing for a few windows every 16 s; the same cap passing a
fifth fewer requests than then ends the wait (the bottleneck changed). A probe whose
latency leaves the calm band ends at once as a failure. A cap that was too low climbs
by a step per probe until the throughput stops rising.

Pure: ``step(state, window, ...) -> (state, probe limit or None)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from surgeguard.inner.window import Window

# A binding cap passing less than this share of the requests/s it passed when a probe
# last failed: the bottleneck changed since (see ``Climb._maybe_start``).
CHANGED = 0.8
# A probe that found nothing lowers the lift by share**FALL (a quarter of a step): the
# cap was about right, and a whole step down would take it under the busy point again.
FALL = 0.25
# The smallest step worth a probe (x the limit): a 100 ms window's count is noisy by a
# fifth, and the gain asked is half the step.
MIN_STEP = 1.2


@dataclass(frozen=True)
class ClimbState:
    """lift: the factor on the knee's cap the probes found (>= 1). next_at: seconds
    (monotonic) before which no probe starts. probe: the limit of the probe under way
    (requests; None: none). probed: its windows closed so far. before: requests/s that
    succeeded in the windows just before it. measured: requests/s of its measuring
    windows so far. recent: requests/s of the last consecutive windows the cap bound.
    failed: probes in a row that found no more throughput; settled: requests/s at the
    cap before the last of them. rose_to: requests/s of a probe that beat the windows
    before it, while the windows after it are counted (0: none); after: their
    requests/s so far; after_seen: windows closed since it ended. step: the probe's
    limit over the cap (x)."""

    lift: float = 1.0
    next_at: float = -math.inf
    probe: int | None = None
    probed: int = 0
    before: float = 0.0
    measured: tuple[float, ...] = ()
    recent: tuple[float, ...] = ()
    failed: int = 0
    settled: float = 0.0
    rose_to: float = 0.0
    after: tuple[float, ...] = ()
    after_seen: int = 0
    step: float = 1.0


@dataclass(frozen=True)
class Climb:
    """The probe's step (``share`` of the limit, > 1), period and period after a gain
    (seconds), the gain it needs (``evidence``, a share of the step), its windows, and
    the largest lift (x)."""

    share: float = 1.5
    every_s: float = 2.0
    again_s: float = 0.3
    evidence: float = 0.5
    fill_windows: int = 1
    measure_windows: int = 3
    before_windows: int = 5
    after_windows: int = 3
    max_lift: float = 16.0
    max_backoff: int = 3  # the period doubles per failed probe, this many times at most

    def __post_init__(self) -> None:
        if not 1 < self.share <= 2:
            raise ValueError(f"climb share must be in (1, 2], got {self.share:g}")
        if not 0 < self.evidence <= 1:
            raise ValueError(f"climb evidence must be in (0, 1], got {self.evidence:g}")
        if not 0 < self.again_s <= self.every_s:
            raise ValueError(
                f"climb needs 0 < again_s <= every_s seconds, got {self.again_s:g}, "
                f"{self.every_s:g}"
            )
        for name in ("measure_windows", "before_windows", "after_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"climb {name} must be >= 1, got {getattr(self, name)}")
        if self.max_lift < 1:
            raise ValueError(f"climb max_lift must be >= 1, got {self.max_lift:g}")
        if not 0 <= self.max_backoff <= 10:
            raise ValueError(f"climb max_backoff must be in [0, 10], got {self.max_backoff}")

    def step(
        self, state: ClimbState, w: Window, *, high: int, succeeded_per_s: float, room: float
    ) -> tuple[ClimbState, int | None]:
        """One closed window. ``high``: the knee's cap now (requests, lift included);
        ``succeeded_per_s``: requests that finished without a 5xx in the window, per
        second; ``room``: how many times the window's latency may grow before it leaves
        the calm band under the target (at most 1: not calm; a probe's step is never
        larger, so it cannot push latency past the band). Returns the state and the
        limit to hold for the probe (None: no probe now)."""
        if state.rose_to:
            return self._after(state, w, succeeded_per_s), None
        if state.probe is None:
            return self._maybe_start(state, w, high, succeeded_per_s, room)
        probed = state.probed + 1
        if room <= 1:  # more in flight queued past the calm band: the cap was right
            return self._end(state, w.now, gained=False), None
        if probed <= self.fill_windows:  # it drains into the bottleneck first
            return replace(state, probed=probed), state.probe
        measured = (*state.measured, succeeded_per_s)
        if len(measured) < self.measure_windows:
            return replace(state, probed=probed, measured=measured), state.probe
        rate = sum(measured) / len(measured)
        if rate < state.before * self._needed(state.step):
            return self._end(state, w.now, gained=False), None
        # It beat the windows before it; a demand that was rising anyway would too, so
        # it must beat the windows after it as well (back at the cap).
        return replace(state, probe=None, probed=0, measured=(), rose_to=rate), None

    def _needed(self, step: float) -> float:
        """The factor over the other windows' requests/s that counts as a gain, for a
        probe of ``step`` (x the limit)."""
        return 1 + self.evidence * (step - 1)

    def _after(self, state: ClimbState, w: Window, succeeded_per_s: float) -> ClimbState:
        seen = state.after_seen + 1
        if seen <= self.fill_windows:  # the probe's extra requests still finish here
            return replace(state, after_seen=seen)
        after = (*state.after, succeeded_per_s)
        if len(after) < self.after_windows:
            return replace(state, after_seen=seen, after=after)
        gained = state.rose_to >= self._needed(state.step) * sum(after) / len(after)
        return self._end(state, w.now, gained=gained)

    def _maybe_start(
        self, state: ClimbState, w: Window, high: int, succeeded_per_s: float, room: float
    ) -> tuple[ClimbState, int | None]:
        binding = w.seen and w.limit >= high and w.peak_in_flight >= w.limit
        if not binding:
            return replace(state, recent=()), None
        recent = (*state.recent, succeeded_per_s)[-self.before_windows :]
        state = replace(state, recent=recent)
        step = min(self.share, room)
        if step < MIN_STEP or len(recent) < self.before_windows:
            return state, None  # too close to the band for a step that can be seen
        before = sum(recent) / len(recent)
        # Waiting out the back-off is for a bottleneck that has not changed: the same
        # cap now passing a fifth less than when a probe last failed means something
        # did (a CPU taken, a slower dependency), so it probes at once.
        changed = state.failed > 0 and before < CHANGED * state.settled
        if w.now < state.next_at and not changed:
            return state, None
        up = math.floor(step * w.limit)
        if up > w.ceiling:  # the knob is the ceiling: nothing to learn above it
            return replace(state, next_at=w.now + self.every_s), None
        step = up / w.limit
        state = replace(state, probe=up, probed=0, before=before, measured=(), step=step)
        return state, up

    def _end(self, state: ClimbState, now: float, *, gained: bool) -> ClimbState:
        if gained:
            lift = min(self.max_lift, state.lift * state.step)  # what the probe showed
            return ClimbState(lift=lift, next_at=now + self.again_s)
        failed = state.failed + 1
        wait = self.every_s * 2 ** min(failed - 1, self.max_backoff)
        lift = max(1.0, state.lift / self.share**FALL)
        return ClimbState(lift=lift, next_at=now + wait, failed=failed, settled=state.before)
