"""The tuning report from a step run: the knee and the converged knobs (pure)."""

from __future__ import annotations

from surgeguard_loadtest.load import tune
from surgeguard_loadtest.load.watch import Window
from surgeguard_loadtest.scenarios import build


def window(at: float, offered: float, admitted: float, p99_ms: float | None) -> Window:
    return Window(
        at=at,
        offered_per_s=offered,
        admitted_per_s=admitted,
        good_per_s=admitted,
        rejected_per_s=offered - admitted,
        errors_per_s=0.0,
        unavailable_per_s=0.0,
        p50_ms=None if p99_ms is None else p99_ms / 3,
        p99_ms=p99_ms,
        limit=40.0,
        queue_limit=100.0,
        peak_in_flight=20.0,
        rss_mb=60.0,
    )


def run_with_a_knee_at_200_per_s() -> dict[str, object]:
    """Eight 10 s stairs of 100 users each (about 100 req/s a stair); the service
    serves up to 200 req/s and sheds the rest; the controller settles at 30."""
    scenario = build("step", 800, 80)
    windows = []
    samples = []
    for second in range(1, 81):
        stair = (second - 1) // 10 + 1
        offered = 100.0 * stair
        windows.append(window(float(second), offered, min(offered, 200.0), 120.0))
        limit = 64.0 if stair < 3 else 30.0
        samples.append((float(second), {"concurrency_limit": limit, "bulkhead.db": 12.0}))
    return tune.result(scenario, windows, samples, slo_ms=250.0)


def test_the_knee_is_the_first_stair_that_sheds() -> None:
    tuned = run_with_a_knee_at_200_per_s()
    assert tuned["capacity_good_per_s"] == 200.0
    assert tuned["knee"] == {
        "between_users": [200, 300],
        "offered_per_s": 300.0,
        "admitted_per_s": 200.0,
        "shed_share": 0.333,
    }


def test_the_best_stairs_knobs_become_static_settings() -> None:
    tuned = run_with_a_knee_at_200_per_s()
    # Stairs 2..8 all serve 200 good/s; the first of them (max keeps the first) wins.
    assert tuned["best_stair"] == 2
    assert tuned["converged"] == {"bulkhead.db": 12.0, "concurrency_limit": 64.0}
    assert tuned["last_stair_knobs"] == {"bulkhead.db": 12.0, "concurrency_limit": 30.0}
    assert tuned["static_settings"] == [
        'PUT /api/v1/knobs/bulkhead.db {"value": 12, "pin": true, '
        '"reason": "tuned by load --tune"}',
        "SURGEGUARD_CONCURRENCY_LIMIT=64",
    ]
    text = tune.report(tuned)
    assert "knee: between 200 and 300 users" in text
    assert "the knobs of stair 2" in text
    assert "SURGEGUARD_CONCURRENCY_LIMIT=64" in text


def test_a_stair_past_the_slo_is_never_the_best() -> None:
    scenario = build("step", 400, 80)  # eight 10 s stairs of 50 users
    windows = [
        window(
            float(s),
            50.0 * ((s - 1) // 10 + 1),
            50.0 * ((s - 1) // 10 + 1),
            100.0 if s <= 40 else 400.0,
        )
        for s in range(1, 81)
    ]
    samples = [(float(s), {"concurrency_limit": float(s)}) for s in range(1, 81)]
    tuned = tune.result(scenario, windows, samples, slo_ms=250.0)
    assert tuned["best_stair"] == 4  # the most goodput among stairs within the SLO
    assert tuned["converged"] == {"concurrency_limit": 38.0}


def test_a_p99_past_the_slo_is_a_knee_even_without_shedding() -> None:
    scenario = build("step", 400, 80)  # eight 10 s stairs of 50 users
    windows = [
        window(
            float(s),
            50.0 * ((s - 1) // 10 + 1),
            50.0 * ((s - 1) // 10 + 1),
            100.0 if s <= 20 else 400.0,
        )
        for s in range(1, 81)
    ]
    tuned = tune.result(scenario, windows, [], slo_ms=250.0)
    assert tuned["knee"]["between_users"] == [100, 150]  # type: ignore[index]
    assert tuned["static_settings"] == []
    assert "no knob samples" in tune.report(tuned)


def test_a_run_that_never_reaches_the_knee_says_so() -> None:
    scenario = build("step", 80, 16)
    windows = [window(float(s), 10.0, 10.0, 50.0) for s in range(1, 17)]
    tuned = tune.result(scenario, windows, [], slo_ms=250.0)
    assert tuned["knee"] is None
    assert "knee: not reached" in tune.report(tuned)
