"""The dashboard app (Streamlit's AppTest) against a real controller and target:
the charts it draws, the controls it locks, an operator action end to end, and what
it does when the controller goes away."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP, TOKEN, Stack

MODES = ("read_only", "recommendations_off", "serve_stale", "shed_sheddable")


def _app() -> AppTest:
    # The first run imports plotly and pandas: allow it more than AppTest's 3 s.
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """Plotly figures drawn, by their ``uirevision`` (one per chart)."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # type: ignore[attr-defined]
    return {s["layout"]["uirevision"]: s for s in specs}


def _names(spec: dict[str, Any]) -> list[str]:
    return [t["name"] for t in spec["data"]]


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_the_charts_carry_the_expected_traces(stack: Stack) -> None:
    at = _app()
    charts = _charts(at)
    assert set(charts) == {
        "bottleneck_band",  # issue 16: the bottleneck's names over time
        "latency",
        "throughput",
        "saturation",
        "bottleneck",
        "jobs",
        "controller",
        "door",
    }

    latency = charts["latency"]
    assert _names(latency) == ["p50", "p95", "p99", "SLO 250 ms", "concurrency limit"]
    limit = latency["data"][4]
    assert limit["yaxis"] == "y2" and limit["line"]["shape"] == "hv"
    assert "overlaying" in latency["layout"]["yaxis2"]

    throughput = _names(charts["throughput"])
    assert throughput[0] == "admitted"
    # Issue 16: real 5xx apart from the deliberate 503s of a full or timed-out bulkhead.
    assert "server errors (5xx, not 503)" in throughput
    assert "deliberate 503s (bulkhead)" in throughput
    # A reason is listed once it rejected something in the window (issue 16: a replica
    # reports every reason it knows, most at zero); this light traffic rejected nothing.
    assert not any(n.startswith("rejected: ") for n in throughput)

    assert "concurrency limit" in _names(charts["saturation"])
    assert "shed threshold (queue limit)" in _names(charts["saturation"])
    assert _names(charts["bottleneck"]) == ["utilisation", "latency inflation"]
    assert list(charts["bottleneck"]["data"][0]["x"]) == [
        "cache",
        "db",
        "payments",
        "recommendations",
    ]
    assert "concurrency_limit" in _names(charts["controller"])
    assert any(n.startswith("backlog: ") for n in _names(charts["jobs"]))

    labels = [m.label for m in at.metric]
    assert labels[:2] == ["Admitted p99", "Goodput"]
    assert "Autopilot" in labels
    assert "SLO state" in _texts(at)
    assert any("Bottleneck:" in str(i.value) for i in [*at.info, *at.warning])


def test_without_a_token_every_control_is_disabled(stack: Stack) -> None:
    at = _app()
    buttons = [b for b in at.button if b.key and "_submit" in b.key]
    assert {f"mode_submit_{m}" for m in MODES} <= {b.key for b in buttons}
    assert all(b.disabled for b in buttons)
    reasons = [t for t in at.text_input if t.key and "reason" in t.key]
    assert reasons and all(t.disabled for t in reasons)
    assert not at.text_input(key="admin_token").disabled  # the one thing to do
    assert "Enter the admin token to act" in _texts(at)


def test_a_mode_switch_sends_the_authenticated_request_and_shows_the_new_state(
    stack: Stack,
) -> None:
    at = _app()
    at.text_input(key="admin_token").input(TOKEN).run()
    assert not at.button(key="mode_submit_read_only").disabled

    at.text_input(key="mode_reason_read_only").input("spike drill")
    at.button(key="mode_submit_read_only").click().run()
    assert not at.exception, [e.value for e in at.exception]

    assert any("Mode read_only is now ON" in s.value for s in at.success), _texts(at)
    state: Any = stack.get("/state")
    assert "read_only" in state["control"]["modes"]
    audit: Any = stack.get("/audit")
    assert audit[0]["what"] == "mode read_only" and audit[0]["reason"] == "spike drill"
    assert audit[0]["old"] is False and audit[0]["new"] is True

    at.run()  # the next run shows the new state everywhere
    assert at.button(key="mode_submit_read_only").label == "Turn read_only off"
    assert ":orange-badge[read_only]" in _texts(at)
    # A static table (issue 16: its reasons wrap instead of being cut off).
    audit_table = next(t.value for t in at.table if "what" in t.value.columns)
    assert audit_table.iloc[0]["what"] == "mode read_only"
    assert audit_table.iloc[0]["reason"] == "spike drill"
    assert _mode_shading(at) == []  # history shades it from the next tick on
    stack.controller.tick()
    at.run()
    assert _mode_shading(at) == ["mode read_only"]


def _mode_shading(at: AppTest) -> list[str]:
    """The latency chart's shaded mode spans (beside them: the bottleneck strip)."""
    shapes = _charts(at)["latency"]["layout"].get("shapes", [])
    return [s["name"] for s in shapes if s["name"].startswith("mode ")]


def test_a_refused_action_shows_the_controllers_message(stack: Stack) -> None:
    at = _app()
    at.text_input(key="admin_token").input("not-the-token").run()
    at.button(key="mode_submit_serve_stale").click().run()
    assert any("A reason is required" in e.value for e in at.error)

    at.text_input(key="mode_reason_serve_stale").input("try")
    at.button(key="mode_submit_serve_stale").click().run()
    errors = [e.value for e in at.error]
    assert any("missing or wrong bearer token (HTTP 401)" in e for e in errors), errors
    assert not at.exception
    state: Any = stack.get("/state")
    assert "serve_stale" not in state["control"]["modes"]


def test_a_controller_that_goes_away_gives_a_banner_and_keeps_the_last_data(
    stack: Stack,
) -> None:
    at = _app()
    before = _charts(at)
    assert not at.error

    stack.controller.server.stop()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    banners = [e.value for e in at.error]
    assert len(banners) == 1 and "Controller unreachable" in banners[0]
    assert "Showing the last data" in banners[0] and "retrying every" in banners[0]
    after = _charts(at)
    assert after.keys() == before.keys()
    assert after["latency"]["data"][2]["y"] == before["latency"]["data"][2]["y"]
    assert [m.label for m in at.metric][:2] == ["Admitted p99", "Goodput"]


def test_a_time_zoom_holds_across_runs_and_draws_only_that_span(stack: Stack) -> None:
    at = _app()
    latency = _charts(at)["latency"]
    assert latency["layout"]["dragmode"] == "select"  # dragging selects a span to zoom to
    xs = _x_ms(latency["data"][2]["x"])
    assert len(xs) >= 3
    span = (xs[1] - 1.0, xs[1] + 1.0)  # around the second point only
    at.session_state["time_zoom"] = span  # what dragging across a chart leaves behind
    at.run()
    stack.traffic_and_ticks(ticks=1, requests=2)
    at.run()  # new data arrived; the span holds
    for key in ("latency", "throughput", "saturation", "controller", "jobs"):
        layout = _charts(at)[key]["layout"]
        assert layout["xaxis"]["range"] == list(span), key
    assert len(_x_ms(_charts(at)["latency"]["data"][2]["x"])) == 3  # one either side
    assert any("Zoomed to" in str(i.value) for i in at.info)

    at.button(key="zoom_reset").click().run()
    assert "range" not in _charts(at)["latency"]["layout"]["xaxis"]
    assert len(_x_ms(_charts(at)["latency"]["data"][2]["x"])) == len(xs) + 2


def _x_ms(x: Any) -> list[float]:
    """A trace's x values (ms), whether plotly sent a list or a typed array."""
    if isinstance(x, dict):  # {"dtype": "f8", "bdata": base64}
        return [float(v) for v in np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])]
    return [float(v) for v in x]


def test_knob_override_unpin_autopilot_and_drills_are_confirmed_and_audited(
    stack: Stack,
) -> None:
    at = _app()
    at.text_input(key="admin_token").input(TOKEN).run()

    at.selectbox(key="knob_name").select("queue_limit").run()
    at.number_input(key="knob_value_queue_limit").set_value(7)
    at.text_input(key="knob_reason").input("hold the queue short")
    at.button(key="knob_submit").click().run()
    assert any("queue_limit set to 7 for every replica, pinned" in s.value for s in at.success)

    at.text_input(key="unpin_reason").input("let the controller tune it")
    at.button(key="unpin_submit").click().run()
    assert any("queue_limit unpinned" in s.value for s in at.success)

    at.text_input(key="autopilot_reason").input("hands on")
    at.button(key="autopilot_submit").click().run()
    assert any("Autopilot paused" in s.value for s in at.success)
    assert at.button(key="autopilot_submit").label == "Resume autopilot"

    at.selectbox(key="chaos_dependency").select("db")
    at.number_input(key="chaos_latency").set_value(5.0)
    at.text_input(key="chaos_reason").input("slow db drill")
    at.button(key="chaos_submit").click().run()
    assert any("Drill on db: latency x5" in s.value for s in at.success)
    at.text_input(key="chaos_clear_reason").input("drill over")
    at.button(key="chaos_clear_submit").click().run()
    assert any("Drills cleared on db" in s.value for s in at.success)
    assert not at.exception, [e.value for e in at.exception]

    audit: Any = stack.get("/audit")
    assert [a["what"] for a in audit] == [
        "chaos db",
        "chaos db",
        "autopilot",
        "pin queue_limit",
        "knob queue_limit",
    ]
    assert audit[-1]["new"] == {"value": 7, "pinned": True}
    state: Any = stack.get("/state")
    assert state["control"]["autopilot"] is False and state["control"]["pins"] == []
