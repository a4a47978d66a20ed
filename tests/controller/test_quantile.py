"""histogram_quantile against hand-computed cases (Prometheus semantics)."""

from __future__ import annotations

import math

import pytest

from surgeguard_controller.sensing.quantile import bucket_deltas, histogram_quantile

INF = math.inf
# 10 observations <= 0.1, 40 more <= 0.25, 50 more <= 0.5, none above.
BUCKETS = [(0.1, 10.0), (0.25, 50.0), (0.5, 100.0), (INF, 100.0)]


def test_interpolates_inside_the_bucket_holding_the_rank() -> None:
    # p50: rank 50 is the top of the 0.25 bucket.
    assert histogram_quantile(0.5, BUCKETS) == pytest.approx(0.25)
    # p30: rank 30 -> 20 of the 40 in (0.1, 0.25] -> 0.1 + 0.15 * 0.5
    assert histogram_quantile(0.3, BUCKETS) == pytest.approx(0.175)
    # p99: rank 99 -> 49 of the 50 in (0.25, 0.5] -> 0.25 + 0.25 * 49/50
    assert histogram_quantile(0.99, BUCKETS) == pytest.approx(0.495)


def test_first_bucket_starts_at_zero() -> None:
    # p5: rank 5 of the 10 in [0, 0.1] -> 0.05
    assert histogram_quantile(0.05, BUCKETS) == pytest.approx(0.05)


def test_rank_in_the_inf_bucket_returns_the_highest_finite_bound() -> None:
    buckets = [(0.1, 10.0), (0.25, 50.0), (INF, 100.0)]
    assert histogram_quantile(0.99, buckets) == 0.25


def test_no_data_is_nan_and_out_of_range_q_is_infinite() -> None:
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(INF, 5.0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 1.0), (0.2, 1.0)]))  # no +Inf bucket
    assert histogram_quantile(-0.1, BUCKETS) == -INF
    assert histogram_quantile(1.1, BUCKETS) == INF


def test_unsorted_and_non_monotonic_input_is_repaired() -> None:
    racy = [(0.5, 99.0), (INF, 100.0), (0.1, 10.0), (0.25, 100.0)]
    # After the fix-up the 0.5 bucket holds 100, like the 0.25 bucket: p99 in (0.1, 0.25].
    assert histogram_quantile(0.99, racy) == pytest.approx(0.1 + 0.15 * (89 / 90))


def test_bucket_deltas_subtract_per_bound() -> None:
    before = [(0.1, 10.0), (0.25, 50.0), (INF, 60.0)]
    after = [(0.1, 15.0), (0.25, 80.0), (INF, 100.0)]
    assert bucket_deltas(after, before) == [(0.1, 5.0), (0.25, 30.0), (INF, 40.0)]


def test_a_counter_reset_counts_everything_since_the_restart() -> None:
    before = [(0.1, 500.0), (0.25, 900.0), (INF, 1000.0)]
    restarted = [(0.1, 3.0), (0.25, 4.0), (INF, 4.0)]
    assert bucket_deltas(restarted, before) == restarted
    assert histogram_quantile(0.5, bucket_deltas(restarted, before)) == pytest.approx(
        0.0666666, 1e-4
    )
