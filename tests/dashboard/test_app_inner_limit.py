"""The inner loop's limit on the page (issue 14, item 1; Streamlit's AppTest over a
recorded controller API behind a real server): dotted next to the controller's
``concurrency_limit`` knob on the latency chart once an inner loop moved it, and not
drawn for a replica whose limit is the knob."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from surgeguard_dashboard import figures
from surgeguard_dashboard.model import Signals, Tick
from tests.dashboard.conftest import APP
from tests.dashboard.recorded import Recording, recorded_controller, signals


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    with recorded_controller() as (url, recording):
        monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", url)
        yield recording


def _latency(at: AppTest) -> dict[str, Any]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # type: ignore[attr-defined]
    (latency,) = [s for s in specs if s["layout"]["uirevision"] == "latency"]
    return latency


def _values(y: Any) -> list[float]:
    if isinstance(y, dict):  # {"dtype": "f8", "bdata": base64}
        return [float(v) for v in np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])]
    return [float(v) for v in y]


def test_the_inner_limit_is_drawn_next_to_the_knob_once_it_moved(recorded: Recording) -> None:
    for n, point in enumerate(recorded.history):
        inner = 40.0 if n < 30 else 12.0 + n % 3  # the knob, then cut under it
        point["replicas"]["r1"]["signals"] = signals(inner_limit=inner)
        point["aggregate"] = signals(inner_limit=inner)  # one replica: all is r1
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    traces = {t["name"]: t for t in _latency(at)["data"]}
    assert list(traces)[-2:] == ["concurrency limit", "inner limit"]
    inner = traces["inner limit"]
    assert inner["yaxis"] == traces["concurrency limit"]["yaxis"] == "y2"
    assert inner["line"]["dash"] == "dot" and inner["line"]["shape"] == "hv"
    assert 12.0 in _values(inner["y"]) and max(_values(inner["y"])) == 40.0
    assert set(_values(traces["concurrency limit"]["y"])) == {40.0}


def _tick(n: int, **over: Any) -> Tick:
    one = signals(**over)
    return Tick.parse(
        {
            "at": 1_800_000_000.0 + n,
            "replicas": {"r1": {"signals": one, "knobs": {"concurrency_limit": 40}}},
            "aggregate": one,
            "bottleneck": {"name": "db", "sentence": "db: busy"},
            "modes": [],
            "autopilot": True,
            "decisions": [],
        }
    )


def test_no_inner_limit_is_drawn_where_it_is_the_knob_or_unknown() -> None:
    same = [_tick(n, inner_limit=40.0) for n in range(3)]
    unknown = [_tick(n) for n in range(3)]
    for ticks in (same, unknown):
        names = [t.name for t in figures.latency_figure(ticks, "r1", 0.25).data]
        assert names[-1] == "concurrency limit", names
    moved = [_tick(n, inner_limit=40.0 - n) for n in range(3)]
    inner = figures.latency_figure(moved, "r1", 0.25).data[-1]
    assert inner.name == "inner limit" and list(inner.y) == [40.0, 39.0, 38.0]
    assert Signals.parse(signals(inner_limit=7.0)).inner_limit == 7.0
