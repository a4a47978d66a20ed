"""Every series of a chart has a colour and dash of its own (issue 16: bulkhead.cache
and concurrency_limit shared a colour; a backlog of email jobs and the dead letters were
both solid red). Pure: figures from history as the API sends it."""

from __future__ import annotations

from typing import Any

from surgeguard_dashboard import bands, door, figures, jobs
from surgeguard_dashboard.model import Tick

T0 = 1_800_000_000.0
STREAMS = ("surgeguard:jobs:email", "surgeguard:jobs:analytics", "surgeguard:jobs:receipts")
KNOBS = {
    "concurrency_limit": 40,
    "queue_limit": 8,
    "queue_timeout_ms": 200,
    "bulkhead.cache": 32,
    "bulkhead.db": 8,
    "bulkhead.payments": 4,
    "bulkhead.recommendations": 6,
}


def _signals(n: int) -> dict[str, Any]:
    return {
        "p50_s": 0.02,
        "p95_s": 0.08,
        "p99_s": 0.12,
        "admitted_per_s": 100.0,
        "good_per_s": 90.0,
        "rejected_per_s": {"queue_full": 10.0, "unauthorized": 2.0, "penalty_full": 1.0},
        "error_rate": 0.05,
        "server_error_rate": 0.01,
        "peak_in_flight": 20.0,
        "concurrency_limit": 40.0,
        "queue_depth": 3.0,
        "queue_limit": 8.0,
        "queue_timeout_s": 0.2,
        "queue_wait_p99_s": 0.05,
        "jobs_pending": dict.fromkeys(STREAMS, 4.0),
        "jobs_lag_s": dict.fromkeys(STREAMS, 2.0),
        "jobs_dead": 1.0,
        "penalty_held": 5.0,
        "penalty_holds_per_s": 2.0,
    }


def _ticks() -> list[Tick]:
    names = ["db", "db", "cache", "cpu", "rejection_work", "none"]
    return [
        Tick.parse(
            {
                "at": T0 + n,
                "replicas": {"r1": {"signals": _signals(n), "knobs": KNOBS}},
                "aggregate": _signals(n),
                "bottleneck": {"name": name, "sentence": f"{name} is it"},
                "decisions": [],
            }
        )
        for n, name in enumerate(names)
    ]


def _styles(fig: Any) -> list[tuple[str, str, str]]:
    """(name, colour, dash) of every line or area series."""
    return [
        (t.name, t.line.color, t.line.dash or "solid")
        for t in fig.data
        if t.type == "scatter" and "lines" in (t.mode or "")
    ]


def test_no_two_series_of_a_time_chart_look_alike() -> None:
    ticks = _ticks()
    for fig in (
        figures.latency_figure(ticks, None, 0.25),
        figures.throughput_figure(ticks, None),
        figures.saturation_figure(ticks, None),
        figures.controller_figure(ticks, None),
        jobs.jobs_figure(ticks, None),
        door.door_figure(ticks, None),
    ):
        styles = _styles(fig)
        assert len(styles) >= 3, fig.layout.title.text
        assert all(colour for _, colour, _ in styles), styles  # none left to the colorway
        looks = [(colour, dash) for _, colour, dash in styles]
        assert len(set(looks)) == len(looks), (fig.layout.title.text, styles)


def test_the_knobs_the_issue_named_differ_in_colour_and_dead_letters_in_colour_and_dash() -> None:
    ticks = _ticks()
    knobs = {
        name: (colour, dash)
        for name, colour, dash in _styles(figures.controller_figure(ticks, None))
    }
    assert knobs["bulkhead.cache"][0] != knobs["concurrency_limit"][0]
    assert len({colour for colour, _ in knobs.values()}) == len(knobs)  # colour alone tells
    queue = {name: (colour, dash) for name, colour, dash in _styles(jobs.jobs_figure(ticks, None))}
    dead = queue["dead letters"]
    for name, (colour, dash) in queue.items():
        if name.startswith("backlog: "):
            assert colour != dead[0] and dash != dead[1], name


def test_the_band_colours_each_name_apart() -> None:
    fig = bands.band_figure(_ticks())
    colours = {t.name: t.marker.color for t in fig.data}
    assert set(colours) == {"db", "cache", "CPU", "rejection work", "none"}
    assert len(set(colours.values())) == len(colours)
