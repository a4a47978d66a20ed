"""The knee that bounds surgeguard's inner aimd (issue 14, items 1 and 2): its estimate,
the first windows of a spike, the hold rule (a starved CPU or a dependency slow on its
own does not drive the limit down), the probe that keeps its base from creeping, and a
dependency that drifts slower and back. A fake FIFO bottleneck and a fake clock: a
window every 100 ms of made-up time, never a sleep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from surgeguard.inner.aimd import Aimd
from surgeguard.inner.knee import Knee, KneeState
from surgeguard.inner.window import Window

WINDOW_S = 0.1
TARGET_S = 0.2


def high(needed: float) -> int:
    """The knee's cap over a busy point of ``needed`` requests, at its defaults."""
    knee = Knee()
    return math.ceil(knee.gain * needed - 1e-9) + knee.spare


class Bottleneck:
    """``slots`` served at once for ``service_s`` each, first come first served, behind
    a closed loop of ``users``; ``cpu_s`` is latency every request pays that no limit
    changes (a CPU others hold). The window after a cut still sees the crowd admitted
    before it. Every request of a window waits alike (FIFO), so its fastest is its mean.

    ``delay_s`` is latency every request pays outside the bottleneck that queues nowhere
    (a CPU share, a network hop): those in it do not hold a slot, so the bottleneck then
    needs ``capacity x (delay_s + service_s)`` in flight to be busy. ``mix`` scales each
    window's mean latency (a route mix: a window of cache hits is fast) without
    changing what is served."""

    def __init__(self, users: int, slots: int = 4, service_s: float = 0.02) -> None:
        self.users, self.slots, self.service_s, self.cpu_s = users, slots, service_s, 0.0
        self.delay_s = 0.0
        self.mix: Callable[[], float] = lambda: 1.0
        self._before = 0

    def capacity(self) -> float:
        """Requests/s the bottleneck completes when busy."""
        return self.slots / self.service_s

    def serve(self, now: float, limit: int, ceiling: int = 256) -> tuple[Window, float]:
        """One window at ``limit``: what the door records, and its goodput (requests/s)."""
        in_flight = min(limit, self.users)
        crowd = max(in_flight, self._before)
        self._before = in_flight
        if self.delay_s:
            rate = min(self.capacity(), in_flight / (self.delay_s + self.service_s))
            at_slots = max(0.0, crowd - rate * self.delay_s)
            latency = self.delay_s + self.service_s * max(1.0, at_slots / self.slots)
        else:
            latency = self.service_s * max(1.0, crowd / self.slots) + self.cpu_s
            rate = min(in_flight, self.slots) / self.service_s
        if self.cpu_s:
            rate = min(rate, in_flight / latency)
        done = max(1, round(rate * WINDOW_S))
        seen = latency * self.mix()
        window = Window(now, limit, 1, ceiling, done, seen, seen, seen, seen, in_flight, 0)
        return window, rate


class Drive:
    """``Aimd`` window by window over a ``Bottleneck``: the limits, latencies and
    goodputs it gave."""

    def __init__(self, limit: int = 64, **params: Any) -> None:
        self.aimd = Aimd(target_s=TARGET_S, **params)
        self.state = self.aimd.initial(limit)
        self.limit, self.now = limit, 1000.0
        self.limits: list[int] = []
        self.latencies: list[float] = []
        self.goodputs: list[float] = []
        self.probing: list[bool] = []  # per limit: the knee's probe (down) set it
        self.climbing: list[bool] = []  # per limit: its climb (a probe up) set it

    def steady(self, since: int = 0) -> list[int]:
        """The limits from window ``since`` on, less the probes' (a designed dip) and
        the climb's (a designed rise)."""
        designed = [p or c for p, c in zip(self.probing, self.climbing, strict=True)]
        pairs = zip(self.limits[since:], designed[since:], strict=True)
        return [limit for limit, probe in pairs if not probe]

    def run(self, service: Bottleneck, windows: int, ceiling: int = 256) -> None:
        for _ in range(windows):
            self.now += WINDOW_S
            window, goodput = service.serve(self.now, self.limit, ceiling)
            self.state, self.limit = self.aimd.step(self.state, window)
            self.limits.append(self.limit)
            self.latencies.append(window.mean_s)
            self.goodputs.append(goodput)
            self.probing.append(self.state.knee.probe is not None)
            self.climbing.append(self.state.knee.climb.probe is not None)


def test_the_estimate_is_littles_law_on_the_fastest_rate_and_the_smallest_mean() -> None:
    knee = Knee()
    state = KneeState()
    w = Window(1000.0, 40, 1, 100, 20, 0.05, 0.05, 0.06, 0.04, 40, 0)
    state, estimate = knee.update(state, w)
    assert estimate is None  # no rate before a second window closes
    slower = Window(1000.1, 40, 1, 100, 20, 0.02, 0.02, 0.03, 0.01, 40, 0)  # 200/s, 20 ms
    state, estimate = knee.update(state, slower)
    assert estimate is not None
    assert (estimate.rate, estimate.base) == (pytest.approx(200.0), 0.02)
    # 200/s x 20 ms = 4 in flight keep the bottleneck busy.
    assert (estimate.low, estimate.high, estimate.probe) == (5, high(4), None)
    busy = Window(1000.2, 40, 1, 100, 10, 0.08, 0.08, 0.09, 0.07, 40, 0)  # 100/s, queued
    _, estimate = knee.update(state, busy)
    assert estimate is not None and (estimate.rate, estimate.base) == (pytest.approx(200.0), 0.02)


def test_a_spike_meets_a_limit_near_the_knee_and_latency_stays_far_under_the_slo() -> None:
    """At half the capacity the limit settles near the knee over what is in flight; the
    spike (5x the users) is then held near the knee's gain times the bottleneck's own
    latency from its first window, and it keeps the bottleneck busy."""
    service = Bottleneck(users=2)  # 100/s of a 200/s bottleneck
    drive = Drive(limit=64)
    drive.run(service, 50)
    assert drive.limit <= high(2) + 1  # the knee over today's concurrency, not 64
    service.users = 500
    start = len(drive.limits)
    drive.run(service, 100)
    spike_latency = drive.latencies[start:]
    assert max(spike_latency) <= 0.5 * TARGET_S, spike_latency[:10]
    settled = drive.goodputs[start + 5 :]
    assert sum(settled) / len(settled) >= 0.95 * service.capacity()
    assert 5 <= drive.steady()[-1] <= high(4)  # busy point 4


def test_the_hold_rule_a_dependency_slow_on_its_own_keeps_the_limit_that_keeps_it_busy() -> None:
    """The db answers in 300 ms with nothing queued: over the target, and no limit can
    change that. The SLO rule alone cuts to the floor and starves the db; with the knee
    the cuts stop at the busy point (30 slots x 300 ms at 100/s) and goodput stays."""
    service = Bottleneck(users=200, slots=30, service_s=0.3)
    alone = Drive(limit=64, knee_gain=0, futile_hold_s=0)
    alone.run(service, 300)
    knee = Drive(limit=64)
    knee.run(service, 300)
    assert alone.limits[-1] <= 2 and alone.goodputs[-1] < 0.1 * service.capacity()
    assert min(knee.steady(50)) >= 30
    assert sum(knee.goodputs[50:]) / 250 >= 0.95 * service.capacity()


def test_the_hold_rule_a_starved_cpu_does_not_drive_the_limit_down() -> None:
    """Latency every request pays whatever the limit (250 ms of a CPU others hold)
    pushes the p90 over the target. The SLO rule alone keeps cutting to the floor; with
    the evidence rule the first cut that did not lower the latency is undone and the
    cuts hold (tried again every 5 s), so the replica keeps serving what its
    concurrency allows."""
    runs = []
    for params in ({}, {"knee_gain": 0, "futile_hold_s": 0}):
        service = Bottleneck(users=300, slots=16, service_s=0.02)
        drive = Drive(limit=64, **params)
        drive.run(service, 100)
        before = drive.limit
        service.cpu_s = 0.25
        drive.run(service, 200)
        runs.append((drive, before))
    (knee, before), (alone, _) = runs
    assert alone.limits[-1] <= 2  # cut for latency it could not change
    # Every futile_hold_s a cut tries again (a few windows of fifty) and is undone, or
    # stops at the knee's low (what the throughput seen needs in flight).
    steady = knee.steady(100)
    assert sum(limit < 0.8 * before for limit in steady) <= 0.1 * len(steady)
    served = before / (0.25 + 0.02 * before / 16)  # what the limit before serves now
    assert sum(knee.goodputs[100:]) / 200 >= 0.8 * served
    assert knee.goodputs[-1] > 10 * alone.goodputs[-1]


def test_the_probe_keeps_the_base_from_creeping_and_costs_two_windows_in_fifty() -> None:
    """Saturated for 60 s, every window queues; without the probe the base would be the
    queued latency within 15 s. With it the base stays the bottleneck's own and the limit
    its knee; the probe takes two windows every 10 s."""
    service = Bottleneck(users=500)
    drive = Drive(limit=20)
    drive.run(service, 600)
    estimate_base = min(b for _, b in drive.state.knee.bases)
    assert estimate_base == pytest.approx(service.service_s, rel=0.05)
    last = drive.limits[-200:]
    probing = [limit < 4 for limit in last]  # under the busy point: the probe's
    assert sum(probing) <= 2 * 3  # 20 s: two probes of two windows (and a spare)
    assert max(drive.steady(len(drive.limits) - 200)) <= high(4)
    # The climb finds no throughput above the knee: a few windows at 1.5x, backing off
    # to one climb in 16 s, and the cap stays where it was.
    climbs = [limit for limit, c in zip(last, drive.climbing[-200:], strict=True) if c]
    assert len(climbs) <= 2 * 4 and max(climbs, default=0) <= math.ceil(1.5 * high(4))
    assert drive.state.knee.climb.lift == 1.0
    assert sum(drive.goodputs[-200:]) / 200 >= 0.97 * service.capacity()


def test_a_base_measured_with_a_queue_is_found_within_a_minute() -> None:
    """Started saturated (the first windows already queue 16x): each probe steps down
    while the latency keeps falling (three steps at most), and within a minute the base
    is the bottleneck's own and the limit at the knee."""
    service = Bottleneck(users=500)
    drive = Drive(limit=64)
    drive.run(service, 600)  # 16x too high: 0.42 per probe (three steps), a probe in 10 s
    assert min(b for _, b in drive.state.knee.bases) == pytest.approx(0.02, rel=0.05)
    drive.run(service, 10)
    assert drive.steady()[-1] <= high(4)


def test_a_dependency_that_drifts_slower_and_back_is_followed_both_ways() -> None:
    """3x slower over 60 s, then well again: the throughput is kept while it drifts (the
    limit grows as the bottleneck needs more in flight) and within 30 s of the recovery
    the limit is back to 90% of where it was, with the base the bottleneck's own."""
    service = Bottleneck(users=500)
    drive = Drive(limit=20)
    drive.run(service, 600)  # settled: the base measured with a queue at the start is gone
    before = drive.steady()[-1]
    for n in range(600):
        service.service_s = 0.02 * (1 + 2 * n / 600)
        drive.run(service, 1)
    assert sum(drive.goodputs[-100:]) / 100 >= 0.9 * service.capacity()
    service.service_s = 0.02
    start = len(drive.limits)
    drive.run(service, 300)
    back = drive.limits[start:]
    assert any(abs(limit - before) <= 0.1 * before for limit in back)
    assert abs(drive.steady()[-1] - before) <= 0.1 * before + 1
    assert min(b for _, b in drive.state.knee.bases) == pytest.approx(0.02, rel=0.05)


def test_the_climb_lifts_a_cap_that_a_route_mix_set_too_low() -> None:
    """A route mix makes each window's mean anything from half to 1.5x the typical
    request: the knee's base, the smallest of them, is half the truth, and its cap
    holds the limit at half of what keeps the bottleneck busy (32 slots of 50 ms).
    The climb sees more in flight buy throughput and lifts the cap until it does not."""
    runs = {}
    for climb in (True, False):
        rng = random.Random(7)
        service = Bottleneck(users=500, slots=32, service_s=0.05)
        service.mix = lambda rng=rng: rng.uniform(0.5, 1.5)
        drive = Drive(limit=20, knee_climb=float(climb))
        drive.run(service, 900)
        runs[climb] = sum(drive.goodputs[-300:]) / 300 / service.capacity()
        if climb:
            assert max(drive.steady(600)) >= 32  # it found the busy point (32 slots)
            # Calm all along (under the band where the SLO rule acts), and far under
            # the target on average.
            assert max(drive.latencies[-300:]) < 0.9 * TARGET_S
            assert sum(drive.latencies[-300:]) / 300 <= 0.5 * TARGET_S
    assert runs[False] <= 0.6  # the trap: the cap allows what it sees
    assert runs[True] >= 0.85, runs


def test_a_latency_that_queues_nowhere_is_climbed_over_within_seconds() -> None:
    """A delay every request pays outside the bottleneck (a CPU share, a hop) arrives
    after the base was measured: the same throughput now needs 4x in flight, and the
    knee's cap, from the old base, would allow it only once its 15 s filter forgets.
    The climb lifts the cap in a few probes: over those 15 s it keeps most of the
    throughput, and latency stays calm."""
    runs = {}
    for climb in (True, False):
        service = Bottleneck(users=500)
        drive = Drive(limit=20, knee_climb=float(climb))
        drive.run(service, 600)
        service.delay_s = 0.06
        drive.run(service, 150)
        runs[climb] = sum(drive.goodputs[-150:]) / 150 / service.capacity()
        assert max(drive.latencies[-150:]) <= TARGET_S
    assert runs[True] >= 0.8 and runs[True] >= runs[False] + 0.1, runs


def test_the_knob_still_wins_over_the_knee() -> None:
    service = Bottleneck(users=500)
    drive = Drive(limit=10)
    drive.run(service, 100, ceiling=6)
    assert max(drive.limits) <= 6


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gain": 0.5}, "knee gain must be >= 1, got 0.5"),
        ({"spare": -1}, "knee spare must be >= 0 requests, got -1"),
        ({"probe_share": 1.0}, r"knee probe_share must be in \(0, 1\), got 1"),
        ({"probe_every_s": 20.0}, "0 < probe_every_s < base_window_s"),
        ({"probe_windows": 1}, "knee probe_windows must be >= 2, got 1"),
    ],
)
def test_the_knees_parameters_say_their_range(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Knee(**params)


def test_aimds_knee_parameters_are_checked_and_zero_turns_it_off() -> None:
    with pytest.raises(ValueError, match=r"knee_gain must be in \[1, 100\], got 0.5"):
        Aimd(knee_gain=0.5)
    assert Aimd(knee_gain=0).knee is None
    assert Aimd().knee == Knee()  # the same defaults
    climbless = Aimd(knee_climb=0).knee
    assert climbless is not None and climbless.climb is None
    with pytest.raises(ValueError, match=r"knee_climb must be 1 \(on\) or 0 \(off\), got 2"):
        Aimd(knee_climb=2)
    assert not math.isnan(Aimd().knee_spare)
