"""``surgeguard bench``'s peers, shapes and ratio table (issue 14): the policies'
settings, the static sweep's choice, the square wave's and the drift's figures, the
ratios to the best peer, on synthetic runs; one real replica for the control-plane
writes the sweep and the drift make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import SettingsError
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_loadtest.bench import ratios
from surgeguard_loadtest.bench.policies import POLICIES, parse_policies, replica_settings
from surgeguard_loadtest.bench.shape_figures import drift_recovery, limit_steadiness
from surgeguard_loadtest.bench.shape_rows import INNER_LIMIT, with_enforced_limits
from surgeguard_loadtest.bench.shapes import (
    QUICK_DRIFT,
    Drift,
    check_factor,
    check_shape,
    plan_shape,
)
from surgeguard_loadtest.bench.spike import stack, table
from surgeguard_loadtest.bench.spike_report import limit_figure, markdown, shaded
from surgeguard_loadtest.bench.static_best import best_limit, by_limit
from surgeguard_loadtest.bench.timeline import Plane, Timeline
from surgeguard_loadtest.scenarios import build
from tests.support.polling import until
from tests.support.processes import clean_env


def w(
    at: float, limit: float, good: float = 100.0, p99: float | None = 100.0, **more: Any
) -> dict[str, Any]:
    return {"at": at, "limit": limit, "good_per_s": good, "p99_ms": p99, **more}


# -- policies --------------------------------------------------------------------------


def test_the_peers_run_in_process_without_a_controller_or_a_queue() -> None:
    for name in ("envoy", "vegas", "netflix-aimd", "gradient2"):
        policy = POLICIES[name]
        assert policy.controller is None and not policy.surgeguard
        assert replica_settings(policy)["queue_limit"] == "0"
    assert replica_settings(POLICIES["envoy"])["inner_loop"] == "envoy-gradient"
    assert replica_settings(POLICIES["gradient2"])["inner_loop"] == "gradient2"
    inner = POLICIES["inner"]
    assert (inner.inner_loop, inner.controller, inner.surgeguard) == ("aimd", "aimd", True)
    assert replica_settings(POLICIES["static-best"], 6) == {
        "queue_limit": "0",
        "concurrency_limit": "6",
    }
    with pytest.raises(ValueError, match="needs the tuned limit"):
        replica_settings(POLICIES["static-best"])
    assert {n for n, p in POLICIES.items() if p.surgeguard} == {"aimd", "inner"}


def test_a_peer_needing_the_inner_loop_is_refused_while_the_replica_has_none() -> None:
    names = "none,static-best,envoy"
    assert parse_policies(names, inner_known=True) == ["none", "static-best", "envoy"]
    with pytest.raises(
        SettingsError, match="policy envoy needs the replica setting SURGEGUARD_INNER_LOOP"
    ):
        parse_policies(names, inner_known=False)
    assert parse_policies("none,static-best,aimd", inner_known=False) == [
        "none",
        "static-best",
        "aimd",
    ]


# -- the static sweep ------------------------------------------------------------------


def test_the_sweep_picks_the_most_goodput_within_the_slo_and_skips_transitions() -> None:
    windows = [
        w(1, 4, good=50, p99=20),  # the first window of a limit: the change itself
        w(2, 4, good=150, p99=40),
        w(3, 4, good=152, p99=42),
        w(4, 8, good=999, p99=10),  # a transition, not counted
        w(5, 8, good=190, p99=90),
        w(6, 8, good=192, p99=95),
        w(7, 32, good=200, p99=300),
        w(8, 32, good=201, p99=320),  # the most goodput, but past the SLO
        w(9, 32, good=203, p99=340),
    ]
    steps = by_limit(windows)
    assert steps == {
        4: {"good_per_s": 151.0, "p99_ms": 41.0, "windows": 2},
        8: {"good_per_s": 191.0, "p99_ms": 92.5, "windows": 2},
        32: {"good_per_s": 202.0, "p99_ms": 330.0, "windows": 2},
    }
    assert best_limit(steps, 250.0) == 8
    # none within the SLO: the most goodput of them all (tune's rule)
    assert best_limit(steps, 5.0) == 32
    assert best_limit({}, 250.0) is None


# -- shapes ----------------------------------------------------------------------------


def test_the_drift_ramps_to_three_times_slower_and_then_recovers_at_once() -> None:
    steps = Drift(pre_s=10, ramp_s=4, post_s=5).steps()
    assert steps == [(10, 1.5), (11, 2.0), (12, 2.5), (13, 3.0), (14, 1.0)]
    assert QUICK_DRIFT.run_s <= 60  # --quick keeps it short


def test_shapes_and_factors_are_checked_before_anything_starts() -> None:
    assert check_factor(None, "spike") == 5.0 and check_factor(10, "spike") == 10
    for bad in (1.0, 21.0, float("nan")):
        with pytest.raises(SettingsError, match=r"--factor must be in \(1, 20\]"):
            check_factor(bad, "spike")
    with pytest.raises(SettingsError, match="--factor is the spike's"):
        check_factor(10, "square")
    with pytest.raises(SettingsError, match="unknown shape saw: choose from spike, square, drift"):
        check_shape("saw")
    assert plan_shape("spike", 200, 40, True, 10).users == 2000
    square = plan_shape("square", 200, 40, True)
    assert (square.users, square.baseline, square.scenario) == (600, 100, "square")
    drift = plan_shape("drift", 200, 40, True)
    assert drift.users == 400 and drift.drift == QUICK_DRIFT and drift.run_s == QUICK_DRIFT.run_s


def test_the_square_scenario_alternates_on_and_off_every_ten_seconds() -> None:
    scenario = build("square", 600, 45, baseline_users=100)
    assert [(s.until_s, s.users) for s in scenario.stages] == [
        (5, 100), (15, 600), (25, 100), (35, 600), (45, 100)
    ]  # fmt: skip
    assert [p.name for p in scenario.phase_spans()] == [
        "baseline",
        "on 1",
        "off 1",
        "on 2",
        "off 2",
    ]
    assert scenario.phase(16) == "off 1"


def test_the_square_wave_reports_the_limits_spread_and_largest_move() -> None:
    # on (0, 10] and (20, 30]; the limit steps 20 -> 10 once, then holds
    limits = [20, 20, 10, 10, 12, 10, 10, 10, 10, 10, 14, 14, 14, 14, 14, 14, 10, 10, 10, 10]
    windows = [w(float(i + 1), n) for i, n in enumerate(limits)] + [w(0.0, 30)]
    found = limit_steadiness(windows, [(0.0, 10.0), (20.0, 30.0)])
    # settled on-windows: at 3..10 (the first 2 s of each "on" are the step)
    assert found["limit_sd_on"] == pytest.approx(0.66, abs=0.01)
    assert found["largest_move"] == 10.0  # 20 -> 10, from the first "on" on
    assert found["largest_move_share"] == 1.0  # the whole range (10..20) in one window
    assert found["limit_range"] == [10.0, 20.0]
    still = limit_steadiness([w(float(t), 8) for t in range(1, 11)], [(0.0, 10.0)])
    assert still["limit_sd_on"] == 0.0 and still["largest_move_share"] == 0.0


def test_the_drift_reports_when_the_limit_came_back_and_whether_the_baseline_crept() -> None:
    before = [w(float(t), 40, p50_ms=30.0) for t in range(-5, 1)]
    slow = [w(float(t), 40 - t, p50_ms=60.0) for t in range(1, 21)]  # down to 20
    after = [w(20.0 + t, min(40, 20 + 5 * t), p50_ms=32.0) for t in range(1, 10)]
    found = drift_recovery(before + slow + after, 0.0, 20.0)
    assert found["limit_before"] == 40.0 and found["limit_min"] == 20.0
    assert found["recovery_s"] == 4.0  # 20 + 5 x 4 = 40 >= 0.9 x 40 (36): 4 s after
    assert found["baseline_crept"] is False and found["limit_end_ratio"] == 1.0
    stuck = [w(20.0 + t, 25, p50_ms=90.0) for t in range(1, 10)]
    found = drift_recovery(before + slow + stuck, 0.0, 20.0)
    assert found["recovery_s"] is None  # never back within the run
    assert found["baseline_crept"] is True and found["p50_end_ratio"] == 3.0
    steady = drift_recovery([w(float(t), 40) for t in range(-5, 30)], 0.0, 20.0)
    assert steady["recovery_s"] == 0.0  # never left


def test_an_inner_loops_limit_is_the_one_enforced() -> None:
    knob_only = Scrape(1.0, {("surgeguard_concurrency_limit", frozenset()): 64.0})
    inner = Scrape(2.0, {**knob_only.samples, (INNER_LIMIT, frozenset()): 9.0})
    rows = with_enforced_limits([w(1.0, 64), w(2.0, 64)], [knob_only, inner])
    assert rows[0]["limit"] == 64 and "knob_limit" not in rows[0]
    assert rows[1]["limit"] == 9.0 and rows[1]["knob_limit"] == 64


# -- the ratio table -------------------------------------------------------------------


def rows() -> dict[str, dict[str, Any]]:
    def row(
        good: float,
        p99: float | None,
        settled: float,
        share: float,
        to: float | None,
        ours: bool = False,
    ) -> dict[str, Any]:
        return {
            "goodput_rps": good, "p99_ms": p99, "p99_ms_settled": settled,
            "slo_window_share": share, "time_to_slo_s": to, "surgeguard": ours,
        }  # fmt: skip

    return {
        "none": row(5.0, None, 9000.0, 0.0, None),
        "static-best": row(180.0, 240.0, 120.0, 0.9, 2.0),
        "envoy": row(170.0, 300.0, 100.0, 1.0, 0.5),
        "aimd": row(189.0, 360.0, 110.0, 1.0, 1.0, ours=True),
        "inner": row(198.0, 200.0, 90.0, 1.0, 0.0, ours=True),
    }


def test_the_best_peer_per_column_and_surgeguards_ratios_to_it() -> None:
    best = ratios.best_peers(rows())
    assert best == {
        "goodput_rps": ("static-best", 180.0),
        "p99_ms": ("static-best", 240.0),  # none has no p99: the worst, not the best
        "p99_ms_settled": ("envoy", 100.0),
        "slo_window_share": ("envoy", 1.0),
        "time_to_slo_s": ("envoy", 0.5),
    }
    found = ratios.ratios(rows())
    assert found["aimd"] == {
        "goodput_rps": 1.05,
        "p99_ms": 1.5,
        "p99_ms_settled": 1.1,
        "slo_window_share": 1.0,
        "time_to_slo_s": 2.0,
    }
    assert found["inner"]["time_to_slo_s"] == 0.0 and found["inner"]["p99_ms"] == 0.833
    assert ratios.ratio(0.0, 0.0) == 1.0 and ratios.ratio(1.0, 0.0) is None
    md = ratios.markdown(rows())
    assert md[2] == (
        "| best peer | static-best (180) | static-best (240) | envoy (100) | envoy (1) "
        "| envoy (0.5) |"
    )
    assert md[3].startswith("| **aimd** | 189 (x1.05) | 360 (x1.50) |")
    assert ratios.markdown({"aimd": rows()["aimd"]}) == []  # no peer: no table


def test_the_report_and_the_terminal_show_every_policy_and_the_ratios() -> None:
    summary = {
        "scenario": "spike", "shape": "spike", "factor": 10, "slo_p99_ms": 250.0,
        "capacity_rps": 200.0, "phases": {"spike_s": 10},
        "static_sweep": {"limit": 8,
                         "steps": {"4": {"good_per_s": 150, "p99_ms": 40, "windows": 2}}},
        "policies": {name: {**r, "goodput_ratio": 0.9, "recovery_s": 1.0, "windows": [w(1.0, 8)]}
                     for name, r in rows().items()},
    }  # fmt: skip
    md = markdown(summary, ["limit"], "no browser here")
    assert "spike 10 s at 10x the capacity in users" in md
    for name in rows():
        assert f"| {name} |" in md
    assert "## surgeguard against the best peer" in md and "| best peer | static-best (180)" in md
    assert "Chosen: limit **8**" in md and "| 4 | 150.0 | 40.0 | 2 |" in md
    assert "## Targets (inner)" in md
    printed = table(summary)
    assert "goodput/s: best peer static-best 180; aimd 189 (x1.05), inner 198 (x1.10)" in printed
    assert {t.name for t in limit_figure(summary).data} == set(rows())


def test_the_square_and_drift_reports_have_their_own_columns_and_shading() -> None:
    square = {
        "shape": "square", "scenario": "square",
        "policies": {"aimd": {"limit_sd_on": 1.5, "largest_move": 4.0, "largest_move_share": 0.25,
                              "on_spans": [[0, 10], [20, 30]], "surgeguard": True}},
    }  # fmt: skip
    md = markdown(square, [], "none")
    assert "| limit sd (on) |" in md and "| 1.50 | 4.0 | 0.25 |" in md
    assert "- largest one-window move / range ≤ 0.5: 0.25 — met" in md
    assert "surgeguard against the best peer" not in md  # the spike's columns only
    assert shaded(square) == [(0.0, 10.0, "on"), (20.0, 30.0, "on")]
    drift = {
        "shape": "drift", "scenario": "drift", "phases": {"drift_s": 20},
        "policies": {"envoy": {"slow_s": 20.0, "recovery_s": None, "baseline_crept": True,
                               "p50_before_ms": 30.0, "p50_end_ms": 90.0, "limit_end_ratio": 2.0}},
    }  # fmt: skip
    md = markdown(drift, [], "none")
    assert "the db 3x slower over 20 s" in md
    assert "- **envoy**: **yes** (p50 30.0 ms before, 90.0 ms at the end" in md
    assert shaded(drift) == [(0.0, 20.0, "db slower (20 s)")]


# -- the control-plane writes, on a real replica ---------------------------------------


def test_the_timeline_runs_its_steps_in_order_and_survives_a_failed_one() -> None:
    seen: list[str] = []

    def fail() -> None:
        raise RuntimeError("lost write")

    timeline = Timeline(
        [(0.0, lambda: seen.append("b")), (0.0, fail), (0.0, lambda: seen.append("c"))]
    )
    timeline.start()
    timeline.join(timeout=5)
    assert seen == ["b", "c"]
    assert [(index, ok) for _, index, ok in timeline.done] == [(0, True), (1, False), (2, True)]


def test_the_sweeps_limit_and_the_drifts_latency_reach_a_real_replica(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path
) -> None:
    def limit(url: str) -> tuple[float, float]:
        text = httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text
        scrape = Scrape.from_text(text, 0.0)
        return scrape.total("surgeguard_concurrency_limit"), scrape.total("surgeguard_queue_limit")

    plane = Plane(redis_server.url)
    with stack("static-best", redis_server.url, tmp_path, tuned_limit=3) as (url, controller):
        assert controller is None
        assert limit(url) == (3.0, 0.0)  # started at the sweep's first limit, no queue
        plane.set_knobs({"concurrency_limit": 7})
        until(lambda: True if limit(url) == (7.0, 0.0) else None, 15, "the limit 7 applied")
        plane.set_latency("db", 2.5)
    doc = json.loads(redis_client.get("surgeguard:control") or b"{}")
    assert doc["chaos"]["db"]["latency_multiplier"] == 2.5
    assert doc["knobs"]["concurrency_limit"] == 7 and doc["updated_by"] == "bench"


def test_bench_refuses_a_factor_for_another_shape_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "surgeguard", "bench", "--shape", "square", "--factor", "10",
         "--out", str(tmp_path / "b")],
        env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "surgeguard bench: --factor is the spike's; the square shape has its own load"
    )
    assert not (tmp_path / "b").exists()
