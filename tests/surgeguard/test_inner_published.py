"""Each inner-loop algorithm as its source publishes it (issue 14, item 1): one window
in, one number out, checked against the formula by hand. surgeguard's own ``aimd``
is checked against its docstring."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from surgeguard.inner.aimd import Aimd, AimdState
from surgeguard.inner.envoy import CONSECUTIVE_MIN_WINDOWS, EnvoyGradient, EnvoyState
from surgeguard.inner.netflix import Gradient2, Gradient2State, NetflixAimd, Vegas, log10_root
from surgeguard.inner.window import Window


def window(limit: int, **over: Any) -> Window:
    fields: dict[str, Any] = {
        "now": 1000.0,
        "limit": limit,
        "floor": 1,
        "ceiling": 1000,
        "completed": 50,
        "mean_s": 0.05,
        "p50_s": 0.05,
        "p90_s": 0.06,
        "min_s": 0.04,
        "peak_in_flight": limit,
        "drops": 0,
    }
    return Window(**(fields | over))


def slow(limit: int, latency_s: float, **over: Any) -> Window:
    return window(limit, mean_s=latency_s, p50_s=latency_s, p90_s=latency_s, **over)


# -- surgeguard's aimd ------------------------------------------------------------------
# These check the SLO rule; the knee that bounds it has tests of its own (test_inner_knee),
# so the windows here that advance the clock turn it off (knee_gain=0), and the evidence
# rule too where they cut twice (futile_hold_s=0; its own tests are in test_inner_knee).


def test_aimd_cuts_in_proportion_to_the_overshoot_between_half_and_the_backoff() -> None:
    aimd = Aimd(target_s=0.2)
    state = aimd.initial(40)
    assert aimd.step(state, slow(40, 2.0))[1] == 20  # 10x over: halved, not less
    assert aimd.step(state, slow(40, 0.25))[1] == 32  # 0.8: target / p90
    assert aimd.step(state, slow(40, 0.21))[1] == 36  # barely over: the backoff, 0.9
    assert aimd.step(state, slow(2, 0.21))[1] == 1  # at least one less
    assert aimd.step(state, slow(1, 2.0))[1] == 1  # the floor


def test_aimd_waits_one_latency_before_cutting_again() -> None:
    aimd = Aimd(target_s=0.2, knee_gain=0, futile_hold_s=0)
    state, limit = aimd.step(aimd.initial(40), slow(40, 0.4, now=1000.0))
    assert limit == 20 and state.cooldown_until == pytest.approx(1000.4)
    # The requests finishing meanwhile were admitted before the cut: no second cut.
    assert aimd.step(state, slow(20, 0.4, now=1000.3))[1] == 20
    assert aimd.step(state, slow(20, 0.4, now=1000.4))[1] == 10
    # Never longer than max_cooldown_s, however slow.
    state, _ = aimd.step(aimd.initial(40), slow(40, 30.0, now=1000.0))
    assert state.cooldown_until == pytest.approx(1000.5)


def test_aimd_holds_inside_the_band_under_the_target() -> None:
    aimd = Aimd(target_s=0.2)
    state = aimd.initial(40)
    for p90 in (0.181, 0.19, 0.2):
        assert aimd.step(state, slow(40, p90))[1] == 40


def test_aimd_grows_by_one_near_the_target_by_a_tenth_far_under_it_only_in_use() -> None:
    aimd = Aimd(target_s=0.2)
    state = aimd.initial(40)
    assert aimd.step(state, slow(40, 0.15))[1] == 41  # under the band: +1
    assert aimd.step(state, slow(40, 0.05))[1] == 44  # under half the target: +10%
    assert aimd.step(state, slow(40, 0.05, peak_in_flight=19))[1] == 40  # not in use
    assert aimd.step(state, slow(40, 0.05, ceiling=42))[1] == 42  # the knob above


def test_aimd_goes_back_where_the_cuts_began_once_the_overload_is_over() -> None:
    """After an episode, while p90 is far under the target, it grows by a tenth per
    window back to the limit before the first cut even when it is not in use; then it
    grows only in use again. (The SLO rule alone: the knee would cap the recovery at
    what 50 requests/s of 20 ms need, as test_inner_knee shows.)"""
    aimd = Aimd(target_s=0.2, knee_gain=0, futile_hold_s=0)
    state, limit = aimd.step(aimd.initial(40), slow(40, 2.0))
    state, limit = aimd.step(state, slow(limit, 2.0, now=1000.6))
    assert (limit, state.recover_to) == (10, 40)  # recovers to the first limit
    limits = []
    for n in range(30):
        state, limit = aimd.step(state, slow(limit, 0.02, now=1001.0 + n, peak_in_flight=2))
        limits.append(limit)
    assert limits[:3] == [11, 13, 15] and limits[-1] == 40 and max(limits) == 40
    assert state.recover_to is None
    assert aimd.step(state, slow(40, 0.02, peak_in_flight=2))[1] == 40  # in use again


def test_aimd_cuts_by_the_backoff_when_most_of_a_window_fails() -> None:
    aimd = Aimd(target_s=0.2)
    state = aimd.initial(40)
    assert aimd.step(state, window(40, completed=10, drops=6))[1] == 36
    assert aimd.step(state, window(40, completed=10, drops=5))[1] == 44  # half: fine


def test_aimds_parameters_say_their_range() -> None:
    with pytest.raises(ValueError, match=r"backoff must be in \[0.5, 1\), got 0.3"):
        Aimd(backoff=0.3)
    with pytest.raises(ValueError, match=r"fast_below must be in \[0, 0.9\], got 0.95"):
        Aimd(fast_below=0.95)


# -- Netflix AIMDLimit ------------------------------------------------------------------


def test_netflix_aimd_as_published() -> None:
    aimd = NetflixAimd(timeout_s=0.2)
    assert aimd.step(None, window(40, drops=1))[1] == 36  # int(40 x 0.9)
    assert aimd.step(None, slow(40, 0.25))[1] == 36  # mean over the timeout: a drop
    assert aimd.step(None, window(5, drops=1))[1] == 4  # at least one less
    assert aimd.step(None, window(40, peak_in_flight=20))[1] == 41  # inflight*2 >= limit
    assert aimd.step(None, window(40, peak_in_flight=19))[1] == 40
    assert NetflixAimd().timeout_s == 5.0  # the published default


# -- Netflix VegasLimit -----------------------------------------------------------------


def test_log10_root_is_the_published_table() -> None:
    assert [log10_root(n) for n in (1, 9, 10, 99, 100, 999, 1000, 10_000)] == [
        1, 1, 1, 1, 2, 2, 31, 100
    ]  # fmt: skip


def test_vegas_moves_by_its_queue_estimate_against_alpha_and_beta() -> None:
    """limit 50: log10root 1, so threshold 1, alpha 3, beta 6; rtt_noload 40 ms."""
    vegas = Vegas()
    state = replace(vegas.initial(50), rtt_noload_s=0.04)

    def moved(mean_s: float, **over: Any) -> int:
        return vegas.step(state, window(50, mean_s=mean_s, min_s=0.05, **over))[1]

    assert moved(0.04) == 56  # queue 0 <= threshold: + beta
    assert moved(0.0412) == 51  # queue ceil(1.46) = 2 < alpha: + log10root
    assert moved(0.0435) == 50  # queue 5: between alpha and beta, hold
    assert moved(0.05) == 49  # queue 10 > beta: - log10root
    assert moved(0.04, drops=1) == 49  # a drop: - log10root
    assert moved(0.04, peak_in_flight=24) == 50  # under half in use: no drift up


def test_vegas_only_records_a_new_smallest_latency() -> None:
    vegas = Vegas()
    state, limit = vegas.step(vegas.initial(50), window(50, min_s=0.03, mean_s=0.2))
    assert (state.rtt_noload_s, limit) == (0.03, 50)
    state, limit = vegas.step(state, window(50, min_s=0.035, mean_s=0.2))
    assert state.rtt_noload_s == 0.03 and limit == 49  # queue 43 > beta


def test_vegas_rtt_noload_does_not_creep_and_is_reset_by_its_probe() -> None:
    """A steady service whose fastest request takes 20-22 ms: rtt_noload stays the
    smallest seen (the noise never ratchets it up); every probe_multiplier x limit
    windows (with jitter) it is reset to the window's fastest, so a dependency that got
    slower for good is followed up, and a faster one is followed down at once."""
    vegas = Vegas(probe_multiplier=2.0)  # a probe every 10-20 windows at limit 10
    state = vegas.initial(10)
    fastest = [0.02 + 0.002 * ((n * 7) % 11) / 10 for n in range(200)]
    noloads = []
    for n, low in enumerate(fastest):
        state, _ = vegas.step(state, window(10, now=1000 + n / 10, min_s=low, mean_s=low * 1.1))
        noloads.append(state.rtt_noload_s)
    assert state.probes >= 5
    assert max(noloads) <= 0.0222 and min(noloads) == pytest.approx(0.02)
    for n in range(40):  # 3x slower for good: the next probe takes the new floor
        state, _ = vegas.step(state, window(10, now=1100 + n / 10, min_s=0.06, mean_s=0.066))
    assert state.rtt_noload_s == pytest.approx(0.06)
    state, _ = vegas.step(state, window(10, min_s=0.01, mean_s=0.011))
    assert state.rtt_noload_s == pytest.approx(0.01)


# -- Netflix Gradient2Limit -------------------------------------------------------------


def test_gradient2_as_published() -> None:
    g2 = Gradient2()
    state = Gradient2State(estimate=36.0, long_rtt_s=0.05, samples=100)
    factor = 2.0 / 601.0

    def stepped(short: float, **over: Any) -> tuple[Gradient2State, int]:
        return g2.step(state, window(36, mean_s=short, **over))

    # Latency as usual: gradient 1, new = 36 + sqrt(36), smoothed 0.2: 37.2.
    after, limit = stepped(0.05)
    assert after.estimate == pytest.approx(37.2) and limit == 37
    # 3x the long-term: the long average moves a little toward it; gradient
    # max(0.5, 1.5 x long / 0.15), just over 0.5; new = 36 x gradient + 6 (about 24),
    # smoothed: 36 x 0.8 + new x 0.2 (about 33.6).
    after, limit = stepped(0.15)
    long = 0.05 * (1 - factor) + 0.15 * factor
    gradient = 1.5 * long / 0.15
    assert after.long_rtt_s == pytest.approx(long) and 0.5 < gradient < 0.51
    assert after.estimate == pytest.approx(36 * 0.8 + (36 * gradient + 6) * 0.2) and limit == 33
    # Back to normal after a long overload (long / short > 2): the long decays by 0.95.
    after, _ = g2.step(replace(state, long_rtt_s=0.2), window(36, mean_s=0.05))
    assert after.long_rtt_s == pytest.approx((0.2 * (1 - factor) + 0.05 * factor) * 0.95)
    # Application-limited (under half in use): the long average learns, the limit holds.
    after, limit = stepped(0.15, peak_in_flight=17)
    assert limit == 36 and after.long_rtt_s == pytest.approx(long)


def test_gradient2_warms_its_long_average_as_a_plain_mean() -> None:
    g2 = Gradient2()
    state = g2.initial(20)
    for short in (0.01, 0.02, 0.03):
        state, _ = g2.step(state, window(int(state.estimate), mean_s=short))
    assert state.long_rtt_s == pytest.approx(0.02) and state.samples == 3


# -- Envoy's gradient controller --------------------------------------------------------


def _measured(envoy: EnvoyGradient, min_rtt_s: float, limit: int) -> EnvoyState:
    return replace(
        envoy.initial(limit), measuring=False, min_rtt_s=min_rtt_s, next_measure_at=2000.0
    )


def test_envoy_starts_with_a_min_rtt_window_pinned_at_min_concurrency() -> None:
    envoy = EnvoyGradient()
    state, limit = envoy.step(envoy.initial(40), window(40, completed=30, p50_s=0.3))
    # 40 were in flight: these were sent before the pin, with a queue's latency.
    assert (state.measuring, limit, state.samples) == (True, 3, 0)
    state, limit = envoy.step(state, window(3, completed=30, p50_s=0.04, now=1000.1))
    assert (state.measuring, limit, state.samples) == (True, 3, 30)
    state, limit = envoy.step(state, window(3, completed=30, p50_s=0.02, now=1000.2))
    # 60 requests >= 50: minRTT is their p50 (weighted by count); back to the limit.
    assert not state.measuring and limit == 40
    assert state.min_rtt_s == pytest.approx((0.04 * 30 + 0.02 * 30) / 60)
    # The next minRTT window: the interval later plus a jitter under 15% of it.
    assert 1060.2 <= state.next_measure_at < 1060.2 + 9.0


def test_envoy_gradient_and_headroom_as_published() -> None:
    envoy = EnvoyGradient()
    state = _measured(envoy, 0.02, 40)
    # gradient = (20 + 25%) / 25 ms = 1.0; limit 40; + sqrt(40) = 46.
    assert envoy.step(state, window(40, p50_s=0.025))[1] == 46
    # Far over: the gradient is bounded at 0.5 (20; + sqrt(20) = 24).
    assert envoy.step(state, window(40, p50_s=1.0))[1] == 24
    # Far under: bounded at 2 (80; + sqrt(80) = 88).
    assert envoy.step(state, window(40, p50_s=0.001))[1] == 88
    assert envoy.step(state, window(40, p50_s=1.0, ceiling=10))[1] == 10  # the knob


def test_envoy_re_measures_min_rtt_after_its_interval_and_follows_a_slower_baseline() -> None:
    envoy = EnvoyGradient(interval_s=10.0)
    state = replace(_measured(envoy, 0.02, 40), next_measure_at=1010.0)
    state, limit = envoy.step(state, window(40, now=1010.0, p50_s=0.06))
    assert (state.measuring, limit, state.deferred) == (True, 3, 40)
    state, limit = envoy.step(state, window(3, now=1010.1, completed=50, p50_s=0.06))
    assert not state.measuring and limit == 40
    assert state.min_rtt_s == pytest.approx(0.06)  # the slower dependency is the new normal
    assert 1020.1 <= state.next_measure_at < 1020.1 + 1.5


def test_envoy_re_measures_at_once_after_five_windows_at_its_minimum() -> None:
    envoy = EnvoyGradient()
    state, limit = _measured(envoy, 0.02, 3), 3
    for n in range(CONSECUTIVE_MIN_WINDOWS):
        assert not state.measuring
        state, limit = envoy.step(state, window(limit, now=1000 + n / 10, p50_s=5.0))
    assert state.measuring and limit == 3


def test_envoy_min_rtt_window_respects_the_floor_and_the_ceiling() -> None:
    envoy = EnvoyGradient()
    assert envoy.step(envoy.initial(40), window(40, floor=5, completed=10))[1] == 5
    assert envoy.step(envoy.initial(2), window(2, ceiling=2, completed=10))[1] == 2
    assert math.isnan(envoy.initial(40).min_rtt_s)


def test_state_types_are_frozen() -> None:
    with pytest.raises(AttributeError):
        AimdState().recover_to = 3  # type: ignore[misc]
