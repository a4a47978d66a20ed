"""The figures, from history and state as the controller's API sends them: pure."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from surgeguard_dashboard import figures, jobs
from surgeguard_dashboard.drills import Drill
from surgeguard_dashboard.model import Signals, State, Tick

T0 = 1_800_000_000.0


def _signals(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "replica": "r1",
        "p50_s": 0.02,
        "p95_s": 0.08,
        "p99_s": 0.12,
        "admitted_per_s": 100.0,
        "good_per_s": 90.0,
        "rejected_per_s": {"queue_full": 10.0, "queue_timeout": 5.0},
        "error_rate": 0.02,
        "in_flight": 12.0,
        "peak_in_flight": 20.0,
        "concurrency_limit": 40.0,
        "queue_depth": 3.0,
        "queue_limit": 8.0,
        "queue_timeout_s": 0.2,
        "queue_wait_p99_s": 0.05,
        "dependencies": {
            "db": {"p99_s": 0.09, "utilisation": 0.95, "limit": 8.0, "error_rate": 0.0},
            "cache": {"p99_s": 0.002, "utilisation": 0.1, "limit": 32.0, "error_rate": 0.0},
        },
        "jobs_pending": {"surgeguard:jobs:email": 4.0},
        "jobs_lag_s": {"surgeguard:jobs:email": 2.5},
        "jobs_dead": 1.0,
        "stale": False,
    }
    raw.update(over)
    return raw


def _tick(
    n: int,
    *,
    modes: tuple[str, ...] = (),
    decisions: tuple[dict[str, Any], ...] = (),
    replicas: dict[str, dict[str, Any]] | None = None,
    **over: Any,
) -> Tick:
    one = _signals(**over)
    replicas = replicas or {"r1": one}
    return Tick.parse(
        {
            "at": T0 + n,
            "replicas": {
                r: {"signals": s, "knobs": {"concurrency_limit": int(s["concurrency_limit"])}}
                for r, s in replicas.items()
            },
            "aggregate": one,
            "bottleneck": {"name": "db", "sentence": "db: 95% busy", "scores": {"db": 2.0}},
            "modes": list(modes),
            "autopilot": True,
            "decisions": list(decisions),
        }
    )


def _cut(knob: str, old: int, new: int, reason: str, applied: bool = True) -> dict[str, Any]:
    return {
        "replica": "r1",
        "knob": knob,
        "old": old,
        "new": new,
        "action": "cut" if new < old else "grow",
        "reason": reason,
        "applied": applied,
    }


def _names(fig: Any) -> list[str]:
    return [t.name for t in fig.data]


def test_latency_has_quantiles_the_slo_line_and_the_limit_as_a_step_on_a_second_axis() -> None:
    ticks = [_tick(n, p99_s=0.1 + n / 100, concurrency_limit=40 - n) for n in range(5)]
    fig = figures.latency_figure(ticks, None, 0.25)

    assert _names(fig) == ["p50", "p95", "p99", "SLO 250 ms", "concurrency limit"]
    p99 = fig.data[2]
    np.testing.assert_allclose(p99.y, [100, 110, 120, 130, 140])
    slo = fig.data[3]
    assert list(slo.y) == [250.0, 250.0] and list(slo.x) == [T0 * 1000, (T0 + 4) * 1000]
    limit = fig.data[4]
    assert limit.yaxis == "y2" and limit.line.shape == "hv"
    assert list(limit.y) == [40, 39, 38, 37, 36]
    assert fig.layout.yaxis2.overlaying == "y"
    assert fig.layout.uirevision == "latency"  # zoom and legend survive refreshes
    assert {t.uid for t in fig.data} == {"p50", "p95", "p99", "slo", "limit"}


def test_mode_spans_are_shaded_once_per_stretch_with_one_legend_entry_per_mode() -> None:
    on = ("read_only",)
    both = ("read_only", "shed_sheddable")
    ticks = [_tick(0), _tick(1, modes=on), _tick(2, modes=both), _tick(3), _tick(4, modes=on)]
    fig = figures.latency_figure(ticks, None, 0.25)

    shapes = [(s.name, s.x0, s.x1, s.showlegend) for s in fig.layout.shapes]
    ms = [(T0 + n) * 1000 for n in range(5)]
    assert shapes == [
        ("mode read_only", ms[1], ms[3], True),
        ("mode shed_sheddable", ms[2], ms[3], True),
        ("mode read_only", ms[4], ms[4], False),  # still on at the last tick
    ]
    assert all(s.layer == "below" for s in fig.layout.shapes)


def test_times_shift_to_the_viewers_zone() -> None:
    fig = figures.latency_figure([_tick(0)], None, 0.25, offset_s=3600)
    assert fig.data[0].x[0] == (T0 + 3600) * 1000


def test_throughput_stacks_admitted_and_each_rejection_reason_and_draws_errors() -> None:
    fig = figures.throughput_figure([_tick(0, server_error_rate=0.005), _tick(1)], None)
    assert _names(fig) == [
        "admitted",
        "rejected: queue_full",
        "rejected: queue_timeout",
        "goodput (inside the SLO)",
        "server errors (5xx, not 503)",
        "deliberate 503s (bulkhead)",
    ]
    stacked = [t.name for t in fig.data if t.stackgroup == "offered"]
    assert stacked == _names(fig)[:3]
    assert list(fig.data[1].y) == [10.0, 10.0]
    # 100/s admitted, 2% of them 5xx of which 0.5% real: the rest deliberate 503s.
    np.testing.assert_allclose(fig.data[4].y[:1], [0.5])
    np.testing.assert_allclose(fig.data[5].y[:1], [1.5])


def test_deliberate_503s_are_never_drawn_as_server_errors() -> None:
    """Issue 16: a bulkhead full or timed out answers 503 on purpose; the chart's 5xx
    line is the real errors only, and the 503s are a line of their own, told apart by
    colour and dash. A controller that does not separate them gets one line saying so."""
    ticks = [_tick(n, error_rate=0.3, server_error_rate=0.0) for n in range(3)]
    fig = figures.throughput_figure(ticks, None)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["server errors (5xx, not 503)"].y, [0, 0, 0])
    np.testing.assert_allclose(by_name["deliberate 503s (bulkhead)"].y, [30] * 3)
    real, deliberate = (by_name[n].line for n in _names(fig)[-2:])
    assert (real.color, real.dash) != (deliberate.color, deliberate.dash)

    older = figures.throughput_figure([_tick(0, error_rate=0.3)], None)
    assert _names(older)[-1] == "5xx, deliberate 503s too"


def test_saturation_draws_each_measure_against_its_limit() -> None:
    fig = figures.saturation_figure([_tick(0)], None)
    pairs = [(t.name, t.yaxis, t.line.shape) for t in fig.data]
    assert pairs == [
        ("in flight (peak)", "y", None),
        ("concurrency limit", "y", "hv"),
        ("queue depth", "y2", None),
        ("shed threshold (queue limit)", "y2", "hv"),
        ("queue wait p99, ms", "y3", None),
        ("queue timeout, ms", "y3", "hv"),
    ]
    assert fig.data[4].y[0] == 50.0 and fig.data[5].y[0] == 200.0


def test_a_stale_replica_is_a_gap_not_a_zero() -> None:
    fig = figures.saturation_figure([_tick(0, stale=True)], "r1")
    assert math.isnan(fig.data[0].y[0])


def test_bottleneck_bars_per_dependency_with_the_worst_highlighted() -> None:
    signals = Signals.parse(_signals())
    fig = figures.bottleneck_figure(signals, {"cache": 1.0, "db": 4.5}, "db")
    util, inflation = fig.data
    assert (util.name, inflation.name) == ("utilisation", "latency inflation")
    assert list(util.x) == ["cache", "db"] and list(util.y) == [10.0, 95.0]
    assert list(inflation.y) == [1.0, 4.5]
    assert list(util.marker.color) == [figures.CALM_COLOUR, figures.WORST_COLOUR]
    assert fig.layout.title.text == "Bottleneck: db"

    busiest = figures.bottleneck_figure(signals, {}, "db", named=False)
    assert list(busiest.data[0].marker.color) == [figures.CALM_COLOUR, figures.BUSIEST_COLOUR]
    assert busiest.layout.title.text == "Busiest dependency: db"
    assert busiest.layout.title.subtitle.text == "not named a bottleneck"


def test_controller_chart_marks_each_decision_with_its_reason_on_hover() -> None:
    reason = "p99 412 ms > SLO 250 ms: concurrency_limit 40 -> 36"
    ticks = [
        _tick(0),
        _tick(1, concurrency_limit=36, decisions=(_cut("concurrency_limit", 40, 36, reason),)),
        _tick(
            2,
            concurrency_limit=36,
            decisions=(_cut("concurrency_limit", 36, 32, "held: pinned", applied=False),),
        ),
    ]
    fig = figures.controller_figure(ticks, "r1")

    assert _names(fig) == [
        "concurrency_limit",
        "decision: cut",
        "decision: grow",
        "decision: not applied",
    ]
    cut = fig.data[1]
    assert list(cut.x) == [(T0 + 1) * 1000] and list(cut.y) == [36.0]
    assert "p99 412 ms &gt; SLO 250 ms" in cut.text[0] and "40 → 36" in cut.text[0]
    assert len(fig.data[2].x) == 0 and len(fig.data[3].x) == 1
    assert fig.layout.uirevision == "controller"


def test_all_replicas_sums_knobs_but_not_the_shared_job_backlog() -> None:
    two = {"a": _signals(concurrency_limit=10.0), "b": _signals(concurrency_limit=30.0)}
    ticks = [_tick(0, replicas=two)]
    knobs = figures.controller_figure(ticks, None)
    assert knobs.data[0].name == "concurrency_limit" and knobs.data[0].y[0] == 40.0
    backlog = jobs.jobs_figure(ticks, None)
    assert _names(backlog) == ["backlog: email", "lag: email, s", "dead letters"]
    assert (backlog.data[0].y[0], backlog.data[1].y[0], backlog.data[2].y[0]) == (4.0, 2.5, 1.0)
    assert backlog.data[1].yaxis == "y2"  # lag on its own axis


def test_figures_of_an_empty_history_are_empty_not_errors() -> None:
    for fig in (
        figures.latency_figure([], None, 0.25),
        figures.throughput_figure([], None),
        figures.saturation_figure([], None),
        figures.controller_figure([], None),
        jobs.jobs_figure([], None),
        figures.bottleneck_figure(None, {}, None),
    ):
        assert all(len(t.x) == 0 for t in fig.data)


def test_state_parses_what_the_api_sends() -> None:
    state = State.parse(
        {
            "slo_p99_ms": 250.0,
            "tick_s": 1.0,
            "last_tick_at": T0,
            "control": {"version": 7, "modes": ["read_only"], "pins": ["queue_limit"]},
            "replicas": {"r1": {"target": "http://x", "knobs": {"queue_limit": 5}}},
            "aggregate": None,
            "bounds": {"queue_limit": [0, 100000]},
        }
    )
    assert state.slo_s == 0.25 and state.aggregate is None
    assert state.control.modes == {"read_only"} and state.control.pins == {"queue_limit"}
    assert state.bounds["queue_limit"] == (0, 100000)
    assert state.knob_value("queue_limit", None) == 5
    assert math.isnan(state.replicas["r1"].signals.p99_s)  # missing is "no data", not 0


def _drill(start: float, end: float | None, scenario: str = "spike", **over: Any) -> Drill:
    raw: dict[str, Any] = {
        "id": f"d-{scenario}-{start}",
        "scenario": scenario,
        "status": "running" if end is None else "finished",
        "source": "controller",
        "started_at": T0 + start,
        "ended_at": None if end is None else T0 + end,
        "users": 100,
        "duration_s": 60.0,
    }
    return Drill.parse(raw | over)


def _bands(fig: Any) -> list[tuple[str, float, float]]:
    return [(s.name, s.x0, s.x1) for s in fig.layout.shapes if s.name.startswith("drill: ")]


def _labels(fig: Any) -> list[tuple[str, float]]:
    return [(a.text, a.x) for a in fig.layout.annotations if a.text.startswith("drill: ")]


def test_every_time_chart_marks_a_drill_in_its_window_with_a_labelled_band() -> None:
    ticks = [_tick(n, modes=("read_only",) if n == 2 else ()) for n in range(10)]
    drills = [_drill(2, 5)]
    ms = [(T0 + n) * 1000 for n in range(10)]
    for fig in (
        figures.latency_figure(ticks, None, 0.25, drills=drills),
        figures.throughput_figure(ticks, None, drills=drills),
        figures.saturation_figure(ticks, None, drills=drills),
        figures.controller_figure(ticks, None, drills=drills),
        jobs.jobs_figure(ticks, None, drills=drills),
    ):
        assert _bands(fig) == [("drill: spike", ms[2], ms[5])], fig.layout.title.text
        assert _labels(fig) == [("drill: spike", ms[2])]
    latency = figures.latency_figure(ticks, None, 0.25, drills=drills)
    assert [s.name for s in latency.layout.shapes] == ["mode read_only", "drill: spike"]
    saturation = figures.saturation_figure(ticks, None, drills=drills)
    assert len(saturation.layout.annotations) == 3 + 1  # the subplot titles stay


def test_a_running_drill_reaches_now_and_old_ones_are_clipped_or_left_out() -> None:
    ticks = [_tick(n) for n in range(10, 21)]
    drills = [
        _drill(0, 5, "soak"),  # over before the window: not drawn
        _drill(4, 12, "step"),  # began before the window: starts at its edge
        _drill(15, None, "retry_storm"),  # still running: up to the latest point
        _drill(30, 40, "step"),  # not yet in the window (clock skew): not drawn
    ]
    fig = figures.latency_figure(ticks, None, 0.25, offset_s=3600, drills=drills)
    at = lambda s: (T0 + s + 3600) * 1000  # noqa: E731 - the viewer's zone
    assert _bands(fig) == [
        ("drill: step", at(10), at(12)),
        ("drill: retry_storm (running)", at(15), at(20)),
    ]


def test_no_drill_or_no_history_draws_no_band() -> None:
    assert _bands(figures.latency_figure([_tick(0), _tick(1)], None, 0.25)) == []
    assert _bands(figures.throughput_figure([], None, drills=[_drill(0, None)])) == []
