"""Issue 11: the door on the dashboard, from history and state as the controller's API
sends them: rejections by reason (each in its own colour), the penalty box, and the
"rejection work" bottleneck named. Pure."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from surgeguard.reasons import REJECTION_REASONS
from surgeguard_dashboard import door, figures
from surgeguard_dashboard.model import Signals, State
from surgeguard_dashboard.summary import rejections_by_reason, status
from tests.dashboard.test_figures import T0, _signals, _tick

STORM = {"unauthorized": 2100.0, "duplicate_key": 3.0, "penalty_full": 480.0, "queue_full": 12.0}
SENTENCE = (
    "rejection work: 14,400 rejections/s vs 40 admitted/s, loop lag 390 ms of p99 "
    "420 ms: the CPU is spent saying no"
)


def _names(fig: Any) -> list[str]:
    return [t.name for t in fig.data]


def _storm(n: int, **over: Any) -> Any:
    return _tick(
        n, rejected_per_s=STORM, penalty_held=1200.0 + n, penalty_holds_per_s=300.0, **over
    )


def test_the_door_chart_stacks_each_reason_by_name_and_draws_the_penalty_box() -> None:
    fig = door.door_figure([_storm(0), _storm(1)], None)

    # The library's order (the limiter's reasons, then the door's), named as it names them.
    assert _names(fig) == [
        "queue_full",
        "unauthorized",
        "duplicate_key",
        "penalty_full",
        "held in the penalty box",
        "holds/s",
    ]
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["unauthorized"].y) == [2100.0, 2100.0]
    assert list(by_name["penalty_full"].y) == [480.0, 480.0]
    assert {by_name[r].stackgroup for r in STORM} == {"rejected"}
    # The penalty box below, held requests and holds/s on their own axes.
    held, holds = by_name["held in the penalty box"], by_name["holds/s"]
    assert list(held.y) == [1200.0, 1201.0] and list(holds.y) == [300.0, 300.0]
    assert (held.yaxis, holds.yaxis) == ("y2", "y3")
    assert fig.layout.uirevision == "door"
    assert [a.text for a in fig.layout.annotations] == [
        "rejections by reason, requests/s",
        "penalty box",
    ]


def test_every_reason_has_its_own_colour_the_same_in_every_chart() -> None:
    colours = [door.reason_colour(r) for r in REJECTION_REASONS]
    assert len(set(colours)) == len(colours), dict(zip(REJECTION_REASONS, colours, strict=True))
    assert door.UNKNOWN_REASON_COLOUR not in colours
    assert door.reason_colour("something_new") == door.UNKNOWN_REASON_COLOUR

    ticks = [_storm(0)]
    in_door = {t.name: t.line.color for t in door.door_figure(ticks, None).data}
    in_throughput = {
        t.name.removeprefix("rejected: "): t.line.color
        for t in figures.throughput_figure(ticks, None).data
        if t.name.startswith("rejected: ")
    }
    assert in_throughput == {r: in_door[r] for r in STORM}
    assert len(set(in_throughput.values())) == len(STORM)


def test_a_reason_the_dashboard_does_not_know_is_drawn_grey_under_its_name_last() -> None:
    fig = door.door_figure([_tick(0, rejected_per_s={"zz_new": 5.0, "mode": 1.0})], None)
    assert _names(fig)[:2] == ["mode", "zz_new"]
    assert fig.data[1].line.color == door.UNKNOWN_REASON_COLOUR


def test_a_controller_without_the_penalty_box_fields_is_a_gap_not_a_zero() -> None:
    raw = _signals()  # no penalty_held, no penalty_holds_per_s
    assert math.isnan(Signals.parse(raw).penalty_held)
    fig = door.door_figure([_tick(0)], None)
    held = next(t for t in fig.data if t.name == "held in the penalty box")
    assert np.isnan(held.y).all()


def test_the_breakdown_names_the_reasons_largest_first() -> None:
    by_reason = rejections_by_reason(Signals.parse(_signals(rejected_per_s=STORM | {"mode": 0})))
    assert [r for r, _ in by_reason] == [
        "unauthorized",
        "penalty_full",
        "queue_full",
        "duplicate_key",
    ]
    assert door.breakdown_text(by_reason) == (
        "unauthorized 2,100/s · penalty_full 480/s · queue_full 12/s · duplicate_key 3.0/s"
    )
    assert door.breakdown_text([]) == "none"
    assert rejections_by_reason(None) == []


def _state(bottleneck: dict[str, Any], **signals: Any) -> State:
    raw = _signals(**signals)
    return State.parse(
        {
            "slo_p99_ms": 250.0,
            "tick_s": 1.0,
            "last_tick_at": T0,
            "replicas": {"r1": {"target": "http://r1", "signals": raw}},
            "aggregate": raw,
            "bottleneck": bottleneck,
        }
    )


def test_the_status_strip_carries_the_held_count_the_reasons_and_rejection_work() -> None:
    state = _state(
        {"name": "rejection_work", "sentence": SENTENCE},
        rejected_per_s=STORM,
        penalty_held=1234.0,
        penalty_holds_per_s=56.0,
    )
    s = status(state, [], None)
    assert (s.penalty_held, s.penalty_holds_per_s) == (1234.0, 56.0)
    assert s.rejected_by_reason[0] == ("unauthorized", 2100.0)
    assert s.bottleneck == "rejection_work"
    assert s.bottleneck_label == "rejection work"
    assert s.sentence == SENTENCE
    # A dependency is named as itself.
    assert status(_state({"name": "db", "sentence": "db"}), [], None).bottleneck_label == "db"


def test_the_bottleneck_view_names_rejection_work_and_shows_the_busiest_as_a_symptom() -> None:
    signals = Signals.parse(_signals())
    fig = figures.bottleneck_figure(
        signals, {"db": 1.2}, "db", named=False, elsewhere="rejection work"
    )
    # The qualifier on a line of its own (issue 16: a half-width chart cut it off).
    assert fig.layout.title.text == "Bottleneck: rejection work"
    assert fig.layout.title.subtitle.text == "not a dependency; busiest dependency: db"
    assert list(fig.data[0].marker.color) == [figures.CALM_COLOUR, figures.BUSIEST_COLOUR]
    idle = figures.bottleneck_figure(signals, {}, None, named=False, elsewhere="rejection work")
    assert idle.layout.title.text == "Bottleneck: rejection work"
    assert idle.layout.title.subtitle.text == "not a dependency"
