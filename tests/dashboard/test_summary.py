"""What the status strip says, and the bottleneck arithmetic: pure."""

from __future__ import annotations

import math

import pytest

from surgeguard_dashboard.model import Bottleneck, Dependency, Signals, Tick
from surgeguard_dashboard.summary import inflation, mode_spans, slo_state, worst_dependency
from surgeguard_dashboard.zoom import selected_span

NAN = math.nan


@pytest.mark.parametrize(
    ("p99_s", "recent", "expected"),
    [
        (0.100, [], "met"),
        (0.199, [0.1, 0.15], "met"),
        (0.201, [], "at risk"),  # above 80% of the SLO
        (0.100, [0.3, 0.1], "at risk"),  # over the SLO within the last 30 s
        (0.100, [NAN], "met"),
        (0.251, [], "violated"),
        (NAN, [], "no data"),
    ],
)
def test_slo_state(p99_s: float, recent: list[float], expected: str) -> None:
    assert slo_state(p99_s, 0.25, recent) == expected


def _tick(at: float, modes: set[str], dep_p99_s: float = NAN) -> Tick:
    deps = {"db": Dependency("db", NAN, dep_p99_s, 0.0, 8, 0, 0, 0)}
    return Tick(at, {}, {}, Signals(dependencies=deps), Bottleneck(), frozenset(modes), True, ())


def test_mode_spans_open_close_and_stay_open_at_the_end() -> None:
    ticks = [_tick(0, set()), _tick(1, {"a"}), _tick(2, {"a", "b"}), _tick(3, {"b"})]
    assert [(s.mode, s.start, s.end) for s in mode_spans(ticks)] == [
        ("a", 1, 3),
        ("b", 2, 3),
    ]
    assert mode_spans([]) == []


def test_inflation_uses_the_controllers_scores_else_the_lowest_p99_of_the_window() -> None:
    dep = Dependency("db", NAN, 0.09, 0.5, 8, 4, 0, 0)
    now = Signals(dependencies={"db": dep})
    # score = utilisation x inflation: 1.5 / 0.5 = 3x
    assert inflation(now, [], None, {"db": 1.5}) == {"db": pytest.approx(3.0)}
    ticks = [_tick(0, set(), 0.03), _tick(1, set(), 0.06), _tick(2, set(), NAN)]
    assert inflation(now, ticks, None, {}) == {"db": pytest.approx(3.0)}  # 90 ms / 30 ms
    assert math.isnan(inflation(now, [], None, {})["db"])


def test_the_worst_dependency_is_the_named_one_else_the_busiest() -> None:
    deps = {
        "db": Dependency("db", NAN, 0.1, 0.9, 8, 7, 0, 0),
        "cache": Dependency("cache", NAN, 0.001, 0.2, 32, 6, 0, 0),
    }
    s = Signals(dependencies=deps)
    assert worst_dependency(s, {"cache": 10.0}, "db") == "db"
    assert worst_dependency(s, {"cache": 10.0}, "none") == "cache"  # 0.2 x 10 > 0.9 x 1
    idle = Signals(dependencies={"db": Dependency("db", NAN, NAN, 0.0, 8, 0, 0, 0)})
    assert worst_dependency(idle, {}, "none") is None


@pytest.mark.parametrize(
    ("selection", "span"),
    [
        ({"selection": {"box": [{"x": [2000.0, 1000.0], "y": [0, 1]}]}}, (1000.0, 2000.0)),
        (
            {"selection": {"box": [{"x": ["1970-01-01 00:00:01", "1970-01-01 00:00:02.5"]}]}},
            (1000.0, 2500.0),
        ),
        ({"selection": {"box": [], "points": []}}, None),  # cleared: back to live
        ({"selection": {"box": [{"x": [5.0, 5.0]}]}}, None),
        (None, None),
    ],
)
def test_a_box_selection_becomes_the_time_zoom(
    selection: object, span: tuple[float, float] | None
) -> None:
    assert selected_span(selection) == span
