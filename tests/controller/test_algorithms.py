"""Limit algorithms fed one sample at a time: a fake clock, exact numbers."""

from __future__ import annotations

import math

import pytest

from surgeguard_controller.algorithms import (
    AIMD,
    CUT,
    GROW,
    HOLD,
    Gradient,
    Sample,
    Static,
    build_algorithm,
)
from tests.support.clock import FakeClock

SLO = 0.25


def sample(
    clock: FakeClock, limit: int, p99_ms: float, peak: float | None = None, **kw: object
) -> Sample:
    return Sample(
        now=clock(),
        limit=limit,
        latency_s=p99_ms / 1000,
        target_s=SLO,
        peak_in_flight=limit if peak is None else peak,
        **kw,
    )  # type: ignore[arg-type]


def test_aimd_cuts_by_the_backoff_on_congestion(fake_clock: FakeClock) -> None:
    update = AIMD(1, 1000, backoff=0.9).update(sample(fake_clock, 40, 412))
    assert (update.limit, update.action) == (36, CUT)
    assert update.why == "p99 412 ms > target 250 ms"


def test_aimd_cuts_on_an_overload_flag_even_when_latency_is_fine(fake_clock: FakeClock) -> None:
    update = AIMD(1, 1000).update(
        sample(fake_clock, 50, 10, overloaded=True, overload_reason="db timeouts 12%")
    )
    assert (update.limit, update.action, update.why) == (45, CUT, "db timeouts 12%")


def test_aimd_grows_by_the_step_only_while_in_use(fake_clock: FakeClock) -> None:
    aimd = AIMD(1, 1000, step=2)
    assert aimd.update(sample(fake_clock, 40, 150, peak=20)).limit == 42
    idle = aimd.update(sample(fake_clock, 40, 150, peak=19))
    assert (idle.limit, idle.action) == (40, HOLD)
    assert "not in use" in idle.why


def test_aimd_holds_inside_the_hysteresis_band(fake_clock: FakeClock) -> None:
    aimd = AIMD(1, 1000, hysteresis=0.1)
    for p99 in (225, 240, 250):  # [0.9 * SLO, SLO]
        assert aimd.update(sample(fake_clock, 40, p99)).action == HOLD
    assert aimd.update(sample(fake_clock, 40, 224)).action == GROW


def test_aimd_cools_down_after_a_cut(fake_clock: FakeClock) -> None:
    aimd = AIMD(1, 1000, cooldown_s=2.0)
    assert aimd.update(sample(fake_clock, 100, 400)).limit == 90
    fake_clock.advance(1.0)
    held = aimd.update(sample(fake_clock, 90, 400))
    assert (held.limit, held.action) == (90, HOLD) and "cooling down" in held.why
    fake_clock.advance(1.0)
    assert aimd.update(sample(fake_clock, 90, 400)).limit == 81


def test_aimd_clamps_to_its_bounds(fake_clock: FakeClock) -> None:
    aimd = AIMD(10, 50, step=5)
    assert aimd.update(sample(fake_clock, 49, 10)).limit == 50
    assert aimd.update(sample(fake_clock, 50, 10)).action == HOLD
    fake_clock.advance(10)
    assert aimd.update(sample(fake_clock, 10, 900)).action == HOLD  # at the minimum
    assert aimd.update(sample(fake_clock, 11, 900)).limit == 10
    assert aimd.update(sample(fake_clock, 500, 10)).limit == 50  # an out-of-range input


def test_aimd_never_moves_without_data(fake_clock: FakeClock) -> None:
    update = AIMD(1, 100).update(Sample(fake_clock(), 40, math.nan, SLO, 0))
    assert (update.limit, update.action) == (40, HOLD)


def test_aimd_recovers_from_a_deep_cut_within_seconds(fake_clock: FakeClock) -> None:
    """Cut from 100 to the floor, then healthy: back to 90% of 100 in ~10 ticks."""
    aimd = AIMD(5, 1000, backoff=0.9, step=2, cooldown_s=0.0)
    limit = 100
    while limit > 10:
        limit = aimd.update(sample(fake_clock, limit, 900)).limit
        fake_clock.advance(1)
    ticks = 0
    while limit < 90:
        limit = aimd.update(sample(fake_clock, limit, 50)).limit
        fake_clock.advance(1)
        ticks += 1
    assert ticks <= 12  # additive +2 per tick alone would take 40
    # Near the target again, growth is additive.
    assert aimd.update(sample(fake_clock, 90, 150)).limit == 92


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff": 1.0}, r"backoff must be in \[0.5, 1\), got 1.0"),
        ({"backoff": 0.4}, r"backoff must be in \[0.5, 1\), got 0.4"),
        ({"step": 0}, r"step must be >= 1, got 0"),
        ({"hysteresis": 1.0}, r"hysteresis must be in \[0, 1\), got 1.0"),
    ],
)
def test_aimd_says_the_allowed_range(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AIMD(1, 10, **kwargs)  # type: ignore[arg-type]


def test_static_never_moves(fake_clock: FakeClock) -> None:
    static = Static()
    for p99 in (10, 900):
        update = static.update(sample(fake_clock, 40, p99))
        assert (update.limit, update.action) == (40, HOLD)


def test_gradient_cuts_when_latency_rises_over_its_long_term_average(fake_clock: FakeClock) -> None:
    gradient = Gradient(1, 1000, tolerance=1.5)
    limit = 100
    for _ in range(20):  # a steady 20 ms
        limit = gradient.update(sample(fake_clock, limit, 20)).limit
    assert limit >= 100
    spike = gradient.update(sample(fake_clock, limit, 120))  # 6x the average
    assert spike.action == CUT
    assert spike.limit <= limit * 0.5 + math.sqrt(limit) + 1


def test_gradient_backs_off_when_latency_is_steadily_over_the_slo(fake_clock: FakeClock) -> None:
    gradient = Gradient(1, 1000)
    limit = 100
    for _ in range(10):
        limit = gradient.update(sample(fake_clock, limit, 500)).limit
    assert limit < 10


def test_gradient_holds_when_idle(fake_clock: FakeClock) -> None:
    update = Gradient(1, 1000).update(sample(fake_clock, 100, 20, peak=10))
    assert (update.limit, update.action) == (100, HOLD)


def test_build_algorithm_names_the_choices() -> None:
    assert build_algorithm("aimd", 1, 10).name == "aimd"
    with pytest.raises(ValueError, match="unknown algorithm 'pid': allowed are aimd, static"):
        build_algorithm("pid", 1, 10)


def test_aimd_proportional_cut_fits_the_target_in_one_step(fake_clock: FakeClock) -> None:
    aimd = AIMD(1, 1000, backoff=0.9, proportional=True)
    assert aimd.update(sample(fake_clock, 100, 400)).limit == 62  # 100 x 250/400
    fake_clock.advance(10)
    assert aimd.update(sample(fake_clock, 100, 2000)).limit == 50  # never below half
    fake_clock.advance(10)
    assert aimd.update(sample(fake_clock, 100, 260)).limit == 90  # the ordinary backoff


def test_aimd_returns_to_its_pre_overload_limit_under_light_traffic(
    fake_clock: FakeClock,
) -> None:
    """After a spike the leftover traffic is too light to 'use' the limit; the limit
    still goes back to where it was before the spike, and no further."""
    aimd = AIMD(1, 1000, cooldown_s=0.0)
    limit = 64
    for _ in range(15):
        limit = aimd.update(sample(fake_clock, limit, 600)).limit
        fake_clock.advance(1)
    assert limit < 20
    light = 3  # requests in flight: far below half of any of these limits
    ticks = 0
    while limit < 64:
        update = aimd.update(sample(fake_clock, limit, 40, peak=light))
        assert update.action == GROW and "recovering toward 64" in update.why
        limit = update.limit
        fake_clock.advance(1)
        ticks += 1
    assert limit == 64 and ticks <= 10
    idle = aimd.update(sample(fake_clock, limit, 40, peak=light))
    assert (idle.limit, idle.action) == (64, HOLD)  # no drift past it


@pytest.mark.parametrize("algorithm", ["aimd", "gradient", "static"])
def test_step_is_state_in_state_out(fake_clock: FakeClock, algorithm: str) -> None:
    """Asking "would this cut?" (``step``) changes nothing; ``update`` keeps the state
    ``step`` returns, so stepping by hand and updating agree. (Issue 11: the hold rule
    tries an algorithm without committing.)"""
    tried, kept = build_algorithm(algorithm, 1, 1000), build_algorithm(algorithm, 1, 1000)
    before = tried.state
    state, would = tried.step(tried.state, sample(fake_clock, 100, 400))
    assert tried.state == before  # nothing committed
    assert kept.update(sample(fake_clock, 100, 400)) == would
    assert kept.state == state
    if algorithm == "aimd":
        assert would.action == CUT and state.last_cut_at == fake_clock()
        again = tried.update(sample(fake_clock, 100, 400))
        assert again == would  # the trial started no cool-down
