"""The inner loop's algorithms (issue 14, item 1) over a fake service and a fake clock:
one suite for the five, each fed a window every 100 ms of made-up time, never a sleep.

The fake service is closed-loop: ``clients`` users each send their next request when
the last is answered, ``capacity`` are served at once and the rest queue, so past it
latency grows in proportion to what is in flight. The window after a cut still sees
the crowd admitted before it (requests are never cancelled), as in a real replica.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest

from surgeguard.inner.algorithms import ALGORITHMS, build_algorithm
from surgeguard.inner.window import InnerAlgorithm, Window

WINDOW_S = 0.1
TARGET_S = 0.2  # aimd's target: the SLO of 250 ms less 20%
# The peers' latency thresholds, where they have one, at the same target: a fair run.
PARAMS: dict[str, dict[str, float]] = {"netflix-aimd": {"timeout_s": TARGET_S}}
# Envoy's gradient controller has no in-use rule (published form): it grows to its
# ceiling however little of the limit is used.
GROW_ONLY_IN_USE = [n for n in ALGORITHMS if n != "envoy-gradient"]


class Service:
    """A fake closed-loop service; ``window`` is what the door would record."""

    def __init__(
        self, clients: int, capacity: int, base_s: float, *, noise: float = 0.0, seed: int = 1
    ) -> None:
        self.clients, self.capacity, self.base_s, self.noise = clients, capacity, base_s, noise
        self._rng = random.Random(seed)
        self._before = 0

    def window(self, now: float, limit: int, floor: int, ceiling: int) -> Window:
        in_flight = min(limit, self.clients)
        crowd = max(in_flight, self._before)
        self._before = in_flight
        latency = self.base_s * max(1.0, crowd / self.capacity)
        if self.noise:
            latency *= 1.0 + self._rng.uniform(-self.noise, self.noise)
        fastest = min(latency, self.base_s + (latency - self.base_s) / 2)  # waited least
        done = max(1, round(in_flight * WINDOW_S / latency))
        return Window(
            now, limit, floor, ceiling, done, latency, latency, latency * 1.2, fastest, in_flight, 0
        )


class Run:
    """One algorithm driven window by window; ``limits`` is every limit it returned."""

    def __init__(self, name: str, limit: int, *, floor: int = 1, ceiling: int = 64) -> None:
        self.algorithm: InnerAlgorithm = build_algorithm(
            name, PARAMS.get(name, {}), target_s=TARGET_S
        )
        self.state: Any = self.algorithm.initial(limit)
        self.limit, self.floor, self.ceiling = limit, floor, ceiling
        self.now = 1000.0
        self.limits: list[int] = []
        self.probing: list[bool] = []  # per limit: aimd's knee probe (down) set it
        self.climbing: list[bool] = []  # per limit: its climb (a probe up) set it

    def feed(self, window: Window) -> int:
        self.state, self.limit = self.algorithm.step(self.state, window)
        assert self.floor <= self.limit <= self.ceiling, (self.limit, window)
        self.limits.append(self.limit)
        knee = getattr(self.state, "knee", None)
        self.probing.append(knee is not None and knee.probe is not None)
        self.climbing.append(knee is not None and knee.climb.probe is not None)
        return self.limit

    def serve(self, service: Service, windows: int) -> list[int]:
        """``windows`` windows of ``service``; the limits returned over them."""
        start = len(self.limits)
        for _ in range(windows):
            self.now += WINDOW_S
            self.feed(service.window(self.now, self.limit, self.floor, self.ceiling))
        return self.limits[start:]


def window(limit: int, **over: Any) -> Window:
    fields: dict[str, Any] = {
        "now": 1000.0,
        "limit": limit,
        "floor": 1,
        "ceiling": 64,
        "completed": 50,
        "mean_s": 0.05,
        "p50_s": 0.05,
        "p90_s": 0.06,
        "min_s": 0.04,
        "peak_in_flight": limit,
        "drops": 0,
    }
    return Window(**(fields | over))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_latency_rise_cuts_within_two_windows(name: str) -> None:
    run = Run(name, 64)
    service = Service(clients=40, capacity=16, base_s=0.02)
    run.serve(service, 200)  # settled, healthy
    before = run.limit
    service.base_s = 0.1  # the dependency gets 5x slower
    after = run.serve(service, 2)
    assert min(after) < before, (before, after)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_it_recovers_once_the_latency_returns(name: str) -> None:
    run = Run(name, 64)
    service = Service(clients=40, capacity=16, base_s=0.02)
    run.serve(service, 200)
    before = run.limit
    service.base_s = 0.1
    low = min(run.serve(service, 30))
    service.base_s = 0.02
    back = run.serve(service, 300)  # 30 s of made-up time: generous for every peer
    # Vegas comes back to where its queue estimate is 3-6 requests: above the 16 the
    # service serves at once. Before the rise it sat higher, as it had not yet seen the
    # true no-load latency (it shows only once the limit is under the capacity).
    goal = service.capacity if name == "vegas" else 0.8 * before
    assert low < before and max(back) >= goal, (before, low, back[-5:])


@pytest.mark.parametrize("name", GROW_ONLY_IN_USE)
def test_a_steady_healthy_load_grows_the_limit_only_while_it_is_in_use(name: str) -> None:
    light = Run(name, 20, ceiling=1000)
    light.serve(Service(clients=5, capacity=1000, base_s=0.02), 300)
    assert max(light.limits) <= 20, max(light.limits)  # 5 in flight never use half of 20

    busy = Run(name, 20, ceiling=1000)
    busy.serve(Service(clients=200, capacity=1000, base_s=0.02), 300)
    assert busy.limit > 40, busy.limits[-5:]


def test_envoys_gradient_grows_to_the_ceiling_unused_as_published() -> None:
    run = Run("envoy-gradient", 20, ceiling=100)
    run.serve(Service(clients=5, capacity=1000, base_s=0.02), 100)
    assert run.limit == 100  # no in-use rule: only the knob above bounds it


@pytest.mark.parametrize("name", ALGORITHMS)
def test_no_oscillation_on_a_steady_load(name: str) -> None:
    """Saturated (300 users, 16 at once) with 5% noise on every latency: over 50
    windows after it has settled the limit's standard deviation stays small. Netflix's
    AIMD saws (+1 a window, x0.9 over the timeout) and Envoy's gradient wobbles around
    its fixed point; neither moves by more than a tenth of its level. surgeguard's aimd
    dips on purpose for its knee's probe (two windows every 10 s, to see the latency
    with nothing queued) and rises on purpose for its climb (three windows at 1.25x, to
    see whether more in flight buys throughput: here it does not, so it backs off to
    one climb in 16 s): outside
    them it stays within 5% (it follows its knee, whose base is the smallest of noisy
    windows: a probe that sees a window 5% faster moves it by that much, once)."""
    run = Run(name, 100, ceiling=300)
    limits = run.serve(Service(clients=300, capacity=16, base_s=0.02, noise=0.05), 400)[-50:]
    if name == "aimd":
        assert 1 <= sum(run.probing[-100:]) <= 2 * 3, run.probing  # one probe in 10 s
        # Its climbs found nothing, so they back off to one in 16 s.
        assert sum(run.climbing[-100:]) <= 2 * 3, run.climbing
        designed = [p or c for p, c in zip(run.probing, run.climbing, strict=True)][-50:]
        steady = [limit for limit, probe in zip(limits, designed, strict=True) if not probe]
        climbs = [limit for limit, c in zip(limits, run.climbing[-50:], strict=True) if c]
        assert not climbs or max(climbs) <= math.ceil(1.25 * max(steady)), (climbs, steady)
        limits = steady
    spread = statistics.pstdev(limits)
    assert spread <= 0.1 * statistics.mean(limits), (spread, limits)
    if name == "aimd":
        assert spread <= 0.05 * statistics.mean(limits), limits


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_limit_stays_within_the_windows_floor_and_ceiling(name: str) -> None:
    """Random windows, bounds that move (a knob the controller changes): every limit
    returned is inside the bounds of the window it answers (``Run.feed`` checks)."""
    rng = random.Random(14)
    run = Run(name, 30)
    for n in range(500):
        run.floor = rng.choice((1, 2, 5))
        run.ceiling = rng.choice((5, 20, 64))
        latency = rng.choice((0.005, 0.05, 0.2, 2.0, math.nan))
        done = 0 if math.isnan(latency) else rng.randint(1, 200)
        run.feed(
            Window(
                1000.0 + n * WINDOW_S,
                max(run.floor, min(run.ceiling, run.limit)),
                run.floor,
                run.ceiling,
                done,
                latency,
                latency,
                latency * 1.5,
                latency / 2,
                rng.randint(0, 80),
                rng.choice((0, 0, 0, 3)),
            )
        )


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_window_in_which_nothing_finished_changes_nothing(name: str) -> None:
    algorithm = build_algorithm(name, PARAMS.get(name, {}), target_s=TARGET_S)
    state = algorithm.initial(30)
    if name == "envoy-gradient":  # past its first minRTT window
        state, _ = algorithm.step(state, window(3, completed=60))
    nothing = window(
        30, completed=0, mean_s=math.nan, p50_s=math.nan, p90_s=math.nan, min_s=math.nan
    )
    assert algorithm.step(state, nothing)[1] == 30


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_step_is_pure(name: str) -> None:
    """The same state and window give the same answer, and the state is not changed:
    a step can be tried and thrown away."""
    algorithm = build_algorithm(name, PARAMS.get(name, {}), target_s=TARGET_S)
    state = algorithm.initial(30)
    w = window(30, mean_s=0.5, p50_s=0.5, p90_s=0.6, drops=1)
    first, again = algorithm.step(state, w), algorithm.step(state, w)
    assert first == again
    assert state == algorithm.initial(30)


def test_parameters_are_checked_where_the_algorithm_is_built() -> None:
    with pytest.raises(ValueError, match=r"backoff must be in \[0.5, 1\), got 1.2"):
        build_algorithm("netflix-aimd", {"backoff": 1.2})
    with pytest.raises(ValueError, match="vegas has no parameter timeout_s: allowed are"):
        build_algorithm("vegas", {"timeout_s": 1.0})
    with pytest.raises(ValueError, match="unknown inner-loop algorithm 'bbr': allowed are off"):
        build_algorithm("bbr")
    assert build_algorithm("aimd", target_s=0.15) == build_algorithm("aimd", {"target_s": 0.15})
