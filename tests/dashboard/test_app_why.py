"""Issue 16 on the page (Streamlit's AppTest) over a recorded controller API behind a
real server (``tests.dashboard.recorded``): the status strip's last move with its
reason in full, the bottleneck's hold time and its band on the charts, a failing
control loop with its error, a replica that does not obey the control plane, real 5xx
apart from the deliberate 503s, reasons that wrap, and the reasons open during an SLO
violation."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP
from tests.dashboard.recorded import LONG_REASON, NOT_APPLIED, Recording, recorded_controller


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recording]:
    with recorded_controller() as (url, recording):
        monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", url)
        yield recording


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> dict[str, dict[str, Any]]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # type: ignore[attr-defined]
    return {s["layout"]["uirevision"]: s for s in specs}


def _said(at: AppTest) -> list[str]:
    return [str(e.value) for e in (*at.markdown, *at.info, *at.warning, *at.error, *at.caption)]


def test_the_strip_says_the_last_move_and_its_reason_in_full(recorded: Recording) -> None:
    at = _app()
    (line,) = [s for s in _said(at) if s.startswith("**Last move**")]
    assert "`queue_limit 40 → 36` on r1" in line
    assert re.search(r"^\*\*Last move\*\* \(\d\d:\d\d:\d\d, \d+ s ago\)", line), line
    assert LONG_REASON.rstrip(".") in line  # the whole reason, not a cut-off column


def test_the_bottleneck_shows_how_long_it_has_held_and_its_history_as_a_band(
    recorded: Recording,
) -> None:
    at = _app()
    (named,) = [w.value for w in at.warning if "Bottleneck:" in w.value]
    assert named.startswith("**Bottleneck: db** (held 42 s, since ")
    assert named.endswith("— db: 100% of its 8 slots busy, p99 190 ms = 9.5x its healthy 20 ms")

    charts = _charts(at)
    band = charts["bottleneck_band"]
    assert [t["name"] for t in band["data"]] == ["cache", "CPU", "db"]  # by name
    db = next(t for t in band["data"] if t["name"] == "db")
    assert db["orientation"] == "h" and db["text"] == ["db"]
    for key in ("latency", "throughput", "saturation", "door", "jobs", "controller"):
        strip = [s["name"] for s in charts[key]["layout"]["shapes"]]
        assert strip == ["bottleneck cache", "bottleneck cpu", "bottleneck db"], key


def test_a_failing_tick_is_shown_with_its_error_not_as_no_data(recorded: Recording) -> None:
    now = recorded.now
    recorded.state["tick"] = {
        "ok": False,
        "failures_total": 31,
        "consecutive_failures": 31,
        "last_error": "ZeroDivisionError: float division by zero",
        "last_error_at": now - 1,
        "last_ok_at": now - 32,
    }
    at = _app()
    (alert,) = [e.value for e in at.error]
    assert "The controller's ticks are failing**: 31 in a row" in alert
    assert "ZeroDivisionError: float division by zero" in alert
    assert "The last good tick was at" in alert and "the numbers below are from then" in alert

    recorded.state["tick"] = recorded.state["tick"] | {"ok": True, "consecutive_failures": 0}
    at.run()
    assert not at.error  # it recovered: the alert goes


def test_a_replica_that_does_not_obey_is_flagged_and_its_decisions_not_applied(
    recorded: Recording,
) -> None:
    now = recorded.now
    r1 = recorded.state["replicas"]["r1"]
    r1.update(applied_version=3, published_version=9, obeying=False, disobeying_since=now - 65)
    reason = f"p99 412 ms > SLO 250 ms: queue_limit 40 -> 11 {NOT_APPLIED}"
    change = recorded.state["last_change"] | {"new": 11, "reason": reason, "applied": False}
    recorded.state["last_change"] = change
    recorded.decisions = [change]
    at = _app()
    (flag,) = [e.value for e in at.error]
    assert flag.startswith("**r1 does not apply the control plane** since ")
    assert "reports control version 3, the controller published 9" in flag
    (line,) = [s for s in _said(at) if s.startswith("**Last move**")]
    assert "**Not applied**" in line and NOT_APPLIED in line
    decisions = next(t.value for t in at.table if "applied" in t.value.columns)
    assert not decisions.iloc[0]["applied"] and decisions.iloc[0]["reason"] == reason


def test_real_5xx_and_deliberate_503s_are_separate_series(recorded: Recording) -> None:
    throughput = _charts(_app())["throughput"]
    by_name = {t["name"]: t for t in throughput["data"]}
    real = by_name["server errors (5xx, not 503)"]
    deliberate = by_name["deliberate 503s (bulkhead)"]
    assert _values(real["y"])[-1] == pytest.approx(2.0)  # 200/s admitted x 1%
    assert _values(deliberate["y"])[-1] == pytest.approx(18.0)  # x (10% - 1%)
    assert real["line"]["color"] != deliberate["line"]["color"]
    assert "errors (5xx)" not in by_name


def test_reasons_wrap_in_tables_and_open_by_default_while_the_slo_is_violated(
    recorded: Recording,
) -> None:
    at = _app()  # p99 310 ms against an SLO of 250 ms: violated
    assert "VIOLATED" in " ".join(_said(at))
    why = next(e for e in at.expander if e.label.startswith("Why each knob is where it is"))
    assert why.proto.expanded
    reasons = next(
        t.value for t in at.table if set(t.value.columns) == {"replica", "knob", "reason"}
    )
    assert reasons.iloc[0]["reason"] == LONG_REASON  # a static table: the cell wraps
    assert not [d for d in at.dataframe if "reason" in d.value.columns]  # no cut-off grid

    for where in (recorded.state["replicas"]["r1"]["signals"], recorded.state["aggregate"]):
        where["p99_s"] = 0.05
    at.run()
    why = next(e for e in at.expander if e.label.startswith("Why each knob is where it is"))
    assert not why.proto.expanded  # within the SLO it stays out of the way


def test_at_idle_no_share_of_nothing_and_no_emoji_in_the_title(recorded: Recording) -> None:
    idle = {"admitted_per_s": 0.0, "good_per_s": 0.0, "rejected_per_s": {}, "p99_s": None}
    for where in (recorded.state["replicas"]["r1"]["signals"], recorded.state["aggregate"]):
        where.update(idle)
    at = _app()
    rejected = next(m for m in at.metric if m.label == "Rejected")
    assert rejected.proto.delta == ""  # no "of 0 req/s offered"
    (title,) = [t.value for t in at.sidebar.title]
    assert title == ":material/shield: surgeguard"  # an icon font Streamlit serves itself


def _values(y: Any) -> list[float]:
    if isinstance(y, dict):  # {"dtype": "f8", "bdata": base64}
        return [float(v) for v in np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])]
    return [float(v) for v in y]
