"""Where more concurrency stops buying throughput: the knee, from Little's law.

A replica's bottleneck (a db's slots, a remote's capacity, the CPU) completes at most
``rate`` requests/s, each taking ``base`` seconds when nothing queues. Little's law says
the bottleneck is kept busy by ``rate x base`` requests in flight; every request past
that only waits. So:

- ``low = ceil(rate x base) + 1``: below it a cut loses goodput and cannot lower
  latency (the latency is the bottleneck's own). The hold rule of the fast loop: a cut
  for latency stops here, which is what keeps a starved CPU or a dependency slow on
  its own from driving the limit to the floor.
- ``high = ceil(gain x rate x base) + spare``: past it more concurrency only queues.
  The limit never grows over it, so a spike meets a limit that is already about right
  and its first second is controlled (latency near ``gain x base``, not the SLO).

``rate`` is the largest completion rate of the last ``rate_window_s`` (the most the
bottleneck was seen to do; while demand is below capacity it is the demand, so the
limit keeps ``gain`` times today's concurrency and grows ``gain``-fold per window when
the demand rises: slow start). ``base`` is the smallest window-mean latency of the last
``base_window_s``: the mean, not the fastest request, so a route mix of fast and slow
calls counts as what it is.

A saturated bottleneck queues every request, so no window would show ``base`` again
and it would creep up (the complaint about minRTT-based limiters). So every
``probe_every_s`` while the limit is binding, the knee probes: the limit drops to
``probe_share`` of ``rate x base``, under the busy point (at it, one request would queue
and each probe would measure a base a little higher: creep all the same). A step lasts
two windows: the first drains what was admitted before it, the second measures. When
that measure undercuts the base believed before it by a fifth or more, the base had
been measured with a queue, so the probe steps lower by ``probe_share`` again (at most
``probe_windows`` windows in all: three steps, so noisy windows cannot walk it to the
floor); otherwise it ends and the limit goes back. A right base costs two windows at
``probe_share`` of the throughput every ``probe_every_s`` (0.5% of the goodput by
default); a base 4x too high is found within two probes.
A slower dependency is followed once its slowness outlasts ``base_window_s``; a faster
one at once (a smaller mean is taken at once).

The cap can also be too low, and then it holds itself there (the rate it sees is what
it allows): the climb (``surgeguard.inner.climb``) probes upward while the cap binds
and latency is calm, and lifts the cap while more in flight still buys throughput.
Its probe windows stay out of the rate filter: the lift alone says what they found.

Pure: ``update(state, window) -> (state, estimate)``, time from ``Window.now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from surgeguard.inner.climb import Climb, ClimbState
from surgeguard.inner.window import Window

Sample = tuple[float, float]  # (seconds at the window's close, value)


@dataclass(frozen=True)
class KneeState:
    """rates: (close, completions/s) of recent windows; bases: (close, mean latency s);
    last_close: the previous window's close (seconds; None before the first);
    next_probe: seconds after which a binding limit probes (-inf: no estimate yet);
    probe: the limit of the probe under way (requests; None: none); probed: windows
    of it closed so far; climb: the probe upward and the lift it found."""

    rates: tuple[Sample, ...] = ()
    bases: tuple[Sample, ...] = ()
    last_close: float | None = None
    next_probe: float = -math.inf
    probe: int | None = None
    probed: int = 0
    climb: ClimbState = field(default_factory=ClimbState)


@dataclass(frozen=True)
class Estimate:
    """low, high: requests (see the module's docstring); probe: the limit to hold while
    measuring ``base`` afresh (requests; None: no probe now). rate: requests/s; base:
    seconds."""

    low: int
    high: int
    probe: int | None
    rate: float
    base: float


@dataclass(frozen=True)
class Knee:
    """The knee's parameters: ``gain`` (x, at least 1) and ``spare`` (requests) over the
    busy point, the filters' spans (seconds), and the probe's period (seconds), step
    (share), undercut (share of the base) and longest run (windows)."""

    gain: float = 1.5
    spare: int = 3
    rate_window_s: float = 2.0
    base_window_s: float = 15.0
    probe_every_s: float = 10.0
    probe_share: float = 0.75
    undercut: float = 0.8  # a measure under this share of the base believed steps lower
    probe_windows: int = 6
    climb: Climb | None = field(default_factory=Climb)  # None: no probe upward

    def __post_init__(self) -> None:
        if self.gain < 1.0:
            raise ValueError(f"knee gain must be >= 1, got {self.gain:g}")
        if self.spare < 0:
            raise ValueError(f"knee spare must be >= 0 requests, got {self.spare}")
        for name in ("probe_share", "undercut"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"knee {name} must be in (0, 1), got {getattr(self, name):g}")
        if not 0 < self.probe_every_s < self.base_window_s:
            raise ValueError(
                "the knee needs 0 < probe_every_s < base_window_s seconds (a fresh base "
                f"must always be inside the filter), got {self.probe_every_s:g}, "
                f"{self.base_window_s:g}"
            )
        if self.probe_windows < 2:
            raise ValueError(f"knee probe_windows must be >= 2, got {self.probe_windows}")

    def update(
        self, state: KneeState, w: Window, *, room: float = 0.0
    ) -> tuple[KneeState, Estimate | None]:
        """Take one closed window; the estimate (None until a rate and a base exist).
        ``room``: how many times its latency may grow and stay calm, under the target
        (the climb probes only when it is over 1, never by more)."""
        now = w.now
        rates = _kept(state.rates, now - self.rate_window_s)
        bases = _kept(state.bases, now - self.base_window_s)
        elapsed = now - state.last_close if state.last_close is not None else 0.0
        climbing = state.climb.probe is not None  # this window ran at the climb's limit
        if elapsed > 0 and w.completed > 0 and not climbing:
            rates += ((now, w.completed / elapsed),)
        believed = min((b for _, b in bases), default=math.inf)  # before this window
        if w.seen:
            bases += ((now, w.mean_s),)
        state = replace(state, rates=rates, bases=bases, last_close=now)
        if not rates or not bases:
            return state, None
        rate = max(r for _, r in rates)  # the most the bottleneck was seen to do
        base = min(b for _, b in bases)
        needed = rate * base  # requests in flight that keep the bottleneck busy
        low = math.ceil(needed - 1e-9) + 1
        lift = state.climb.lift
        high = max(low, math.ceil(self.gain * needed * lift - 1e-9) + self.spare)
        if state.probe is None and self.climb is not None and elapsed > 0:
            succeeded = (w.completed - w.drops) / elapsed
            climb, up = self.climb.step(
                state.climb, w, high=high, succeeded_per_s=succeeded, room=room
            )
            state = replace(state, climb=climb)
            if up is not None or climbing:
                return state, Estimate(low, high, up, rate, base)
        state = self._probe(
            state, w, needed, undercut=w.seen and w.mean_s < self.undercut * believed
        )
        return state, Estimate(low, high, state.probe, rate, base)

    def _probe(self, state: KneeState, w: Window, needed: float, *, undercut: bool) -> KneeState:
        """The probe's next step: start one, step it lower, or end it. ``undercut``: this
        window's mean latency is well under the base believed before it."""
        now = w.now
        if state.probe is None:
            if state.next_probe == -math.inf:  # the first estimate: the first probe later
                return replace(state, next_probe=now + self.probe_every_s)
            if now >= state.next_probe and w.peak_in_flight >= w.limit:
                # Binding: the bottleneck may be queueing everything; drain it and look.
                # Never over the limit now (the rate may be older than a cut).
                start = max(1, math.floor(self.probe_share * min(needed, w.limit)))
                return replace(state, probe=start, probed=0)
            return state
        probed = state.probed + 1
        if probed % 2:  # the step's first window: it drained what came before
            return replace(state, probed=probed)
        if undercut and state.probe > 1 and probed + 2 <= self.probe_windows:
            lower = max(1, math.floor(self.probe_share * state.probe))
            return replace(state, probe=lower, probed=probed)
        return replace(state, probe=None, probed=0, next_probe=now + self.probe_every_s)


def _kept(samples: tuple[Sample, ...], since: float) -> tuple[Sample, ...]:
    """The samples taken after ``since`` (seconds)."""
    return tuple(s for s in samples if s[0] > since)
