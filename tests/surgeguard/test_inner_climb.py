"""The knee's probe upward (``surgeguard.inner.climb``), pure, window by window: it
starts only while the cap binds and latency is calm, lifts the cap when more in flight
bought throughput, lowers the lift and backs off when it did not (until the bottleneck
changes), gives up at once when latency leaves the calm band, and never probes over
the knob."""

from __future__ import annotations

from typing import Any

import pytest

from surgeguard.inner.climb import Climb, ClimbState
from surgeguard.inner.window import Window

# Small numbers, so each test's windows can be read: 1.25x, three windows before, one
# to fill, two to measure, then one to drain and two after (the defaults are larger:
# fewer false climbs in noisy windows).
CLIMB = Climb(share=1.25, measure_windows=2, before_windows=3, after_windows=2)


def window(now: float, limit: int, *, peak: int | None = None, ceiling: int = 100) -> Window:
    done = 20
    return Window(now, limit, 1, ceiling, done, 0.05, 0.05, 0.06, 0.04, peak or limit, 0)


def run(
    climb: Climb,
    state: ClimbState,
    rates: list[float],
    *,
    limit: int = 20,
    room: float = 2.0,
    start: float = 100.0,
) -> tuple[ClimbState, list[int | None]]:
    """Feed a binding window at ``limit`` per rate (requests/s that succeeded); the
    probe limits returned."""
    probes = []
    for n, rate in enumerate(rates):
        at = limit if state.probe is None else state.probe
        state, probe = climb.step(
            state, window(start + n * 0.1, at), high=limit, succeeded_per_s=rate, room=room
        )
        probes.append(probe)
    return state, probes


def test_more_throughput_at_a_quarter_more_in_flight_lifts_the_cap() -> None:
    # Three windows at the cap (200/s), the probe (one to fill, two at 250/s), then back
    # at the cap (one to drain, two at 200/s again): the probe's gain was its own.
    state, probes = run(CLIMB, ClimbState(), [200, 200, 200, 230, 250, 250, 240, 200, 200])
    assert probes == [None, None, 25, 25, 25, None, None, None, None]
    assert state.lift == pytest.approx(1.25)
    assert state.probe is None and not state.rose_to
    assert state.next_at == pytest.approx(100.8 + CLIMB.again_s)  # soon again: slow start


def test_a_demand_that_was_rising_anyway_is_not_a_gain() -> None:
    """The probe beat the windows before it, but the windows after it, back at the cap,
    do as well: the throughput rose with the demand, not with the probe."""
    state, probes = run(CLIMB, ClimbState(), [200, 200, 200, 230, 250, 250, 250, 250, 255])
    assert probes[2:5] == [25, 25, 25]
    assert state.lift == 1.0 and state.failed == 1
    assert state.next_at == pytest.approx(100.8 + CLIMB.every_s)


def test_no_more_throughput_means_the_cap_was_about_right_and_the_lift_comes_down() -> None:
    """A quarter of a step down per probe that found nothing (a whole step would take
    the cap under the busy point again), and never under the knee's own cap."""
    lifted = ClimbState(lift=1.5625)
    state, probes = run(CLIMB, lifted, [200, 200, 200, 200, 210, 215])  # +7.5%: noise
    assert probes[2] == 25 and probes[-1] is None
    assert state.lift == pytest.approx(1.5625 / 1.25**0.25)
    assert state.next_at == pytest.approx(100.5 + CLIMB.every_s)
    for _ in range(12):
        state, _ = run(CLIMB, state, [200] * 6, start=state.next_at)
    assert state.lift == 1.0


def test_latency_leaving_the_calm_band_ends_the_probe_as_a_failure() -> None:
    state, probes = run(CLIMB, ClimbState(lift=1.25), [200, 200, 200])
    assert probes[-1] == 25
    state, probe = CLIMB.step(state, window(100.3, 25), high=20, succeeded_per_s=400, room=0.9)
    assert probe is None and state.probe is None
    assert state.lift == pytest.approx(1.25**0.75)  # the rise is not counted: it queued


def test_a_probe_is_never_larger_than_the_room_under_the_calm_band() -> None:
    """Latency at most 1.15x from the band: a probe of 1.15x, not 1.25x, and its gain
    asked is half of that step; closer to the band than 1.2x, no probe at all."""
    state, probes = run(CLIMB, ClimbState(), [200] * 3, room=1.15)
    assert probes[-1] is None  # 1.15x: too small a step to see through the noise
    state, probes = run(CLIMB, ClimbState(), [200] * 3, limit=40, room=1.22)
    assert probes[-1] == 48 and state.step == pytest.approx(1.2)
    state, _ = run(CLIMB, state, [220, 221, 221, 221, 200, 200], limit=40, room=1.22, start=100.3)
    assert state.lift == pytest.approx(1.2)  # +10.5% over both sides: over half of 20%


@pytest.mark.parametrize(
    "case",
    [
        {"room": 1.0},  # latency at the calm band already: the SLO rule's ground
        {"peak": 12},  # the limit does not bind: demand is under it
        {"high": 30},  # the limit is under the cap: the SLO rule holds it there
        {"ceiling": 22},  # 1.25 x 20 is over the knob: nothing to learn
    ],
)
def test_a_probe_starts_only_where_it_can_learn_something(case: dict[str, Any]) -> None:
    state = ClimbState()
    for n in range(10):
        w = window(100 + n * 0.1, 20, peak=case.get("peak"), ceiling=case.get("ceiling", 100))
        state, probe = CLIMB.step(
            state, w, high=case.get("high", 20), succeeded_per_s=200, room=case.get("room", 2.0)
        )
        assert probe is None
    assert state.lift == 1.0


def test_it_waits_its_period_and_needs_windows_at_the_cap_first() -> None:
    state, probes = run(CLIMB, ClimbState(next_at=100.45), [200] * 6)
    assert probes == [None] * 5 + [25]  # the first window past its period
    # A window the limit did not bind breaks the run: three binding ones again first.
    state = ClimbState()
    state, _ = run(CLIMB, state, [200, 200])
    state, probe = CLIMB.step(
        state, window(100.2, 20, peak=12), high=20, succeeded_per_s=120, room=2.0
    )
    assert probe is None and state.recent == ()
    state, probes = run(CLIMB, state, [200] * 3, start=100.3)
    assert probes == [None, None, 25]


def test_failed_probes_back_off_until_the_bottleneck_changes() -> None:
    """Each probe that finds nothing doubles the wait before the next (2, 4, 8, then
    16 s at most): a saturated bottleneck is not probed every 2 s for ever. The same
    cap passing a fifth fewer requests than then is a changed bottleneck: at once."""
    state, waits = ClimbState(), []
    for _ in range(5):
        start = max(100.0, state.next_at)
        state, _ = run(CLIMB, state, [200] * 6, start=start)
        waits.append(round(state.next_at - (start + 0.5), 6))
    assert waits == [2.0, 4.0, 8.0, 16.0, 16.0]
    assert (state.failed, state.settled) == (5, 200)
    _, probes = run(CLIMB, state, [190] * 3, start=state.next_at - 10)  # 5% less: noise
    assert probes == [None] * 3
    state, probes = run(CLIMB, state, [150] * 3, start=state.next_at - 10)  # 25% less
    assert probes == [None, None, 25]
    assert state.before == 150


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"share": 1.0}, "climb share must be in (1, 2], got 1"),
        ({"evidence": 0}, "climb evidence must be in (0, 1], got 0"),
        ({"again_s": 3.0}, "climb needs 0 < again_s <= every_s seconds, got 3, 2"),
        ({"share": 2.5}, "climb share must be in (1, 2], got 2.5"),
        ({"measure_windows": 0}, "climb measure_windows must be >= 1, got 0"),
        ({"after_windows": 0}, "climb after_windows must be >= 1, got 0"),
        ({"max_lift": 0.5}, "climb max_lift must be >= 1, got 0.5"),
        ({"max_backoff": 11}, "climb max_backoff must be in [0, 10], got 11"),
    ],
)
def test_its_parameters_say_their_range(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Climb(**params)
    assert str(raised.value) == message
