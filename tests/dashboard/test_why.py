"""The why in front (issue 16), as the status strip words it: the last move with its
reason in full, how long the bottleneck has held, a failing control loop, a replica
that does not obey. Pure: state as the API sends it, sentences out."""

from __future__ import annotations

from typing import Any

from surgeguard_dashboard import why
from surgeguard_dashboard.bands import bottleneck_spans, mark_bottlenecks
from surgeguard_dashboard.figures import latency_figure
from surgeguard_dashboard.model import Decision, State, Tick

T0 = 1_800_000_000.0
REASON = (
    "p99 412 ms > SLO 250 ms and db is 100% busy (8 of 8 slots, p99 190 ms = 9.5x its "
    "healthy 20 ms): queue_limit 40 -> 36, the shed threshold follows Little's law"
)


def clock(at: float) -> str:
    return f"t+{at - T0:.0f}"


def _state(**over: Any) -> State:
    raw: dict[str, Any] = {
        "slo_p99_ms": 250.0,
        "tick_s": 1.0,
        "last_tick_at": T0 + 100,
        "replicas": {"r1": {"target": "http://r1"}},
        "bottleneck": {"name": "db", "sentence": "db: 100% busy"},
    }
    raw.update(over)
    return State.parse(raw)


def _tick(n: int, name: str) -> Tick:
    return Tick.parse({"at": T0 + n, "bottleneck": {"name": name, "sentence": f"{name}!"}})


def test_the_last_move_is_told_with_its_reason_in_full() -> None:
    change = {
        "replica": "r1",
        "knob": "queue_limit",
        "old": 40,
        "new": 36,
        "action": "cut",
        "reason": REASON,
        "applied": True,
        "at": T0 + 90,
    }
    state = _state(last_change=change)
    text = why.last_change_text(why.last_change(state, []), T0 + 100, clock)
    assert "`queue_limit 40 → 36` on r1" in text and "(t+90, 10 s ago)" in text
    assert REASON in text  # never cut
    assert "Not applied" not in text

    unapplied = why.last_change_text(Decision.parse(change | {"applied": False}), T0, clock)
    assert "**Not applied**" in unapplied


def test_an_older_controller_s_last_move_is_the_newest_decision_of_its_log() -> None:
    newest = Decision.parse({"knob": "mode.shed_sheddable", "action": "on", "reason": "spike"})
    assert why.last_change(_state(), [newest]) == newest
    assert "`mode shed_sheddable on`" in why.last_change_text(newest, T0, clock)
    assert "none yet" in why.last_change_text(why.last_change(_state(), []), T0, clock)


def test_markdown_in_a_reason_is_shown_as_text() -> None:
    assert why.markdown_text("cost $5 *now*") == "cost \\$5 \\*now\\*"


def test_the_bottleneck_hold_time_is_the_controllers_or_read_from_history() -> None:
    told = _state(bottleneck={"name": "db", "since": T0 + 58, "held_s": 42.0})
    assert why.held_text(why.held(told, [], T0 + 100), clock) == "held 42 s, since t+58"
    history = [_tick(0, "cache"), _tick(1, "db"), _tick(2, "db"), _tick(3, "db")]
    older = why.held(_state(), history, T0 + 5)
    assert (older.since, older.held_s) == (T0 + 1, 4.0)
    assert why.held_text(why.held(_state(), [], T0), clock) == ""  # nothing to tell
    assert why.duration(185) == "3 min 5 s" and why.duration(3700) == "1 h 1 min"


def test_a_failing_tick_is_told_with_its_error() -> None:
    tick = {
        "ok": False,
        "failures_total": 23,
        "consecutive_failures": 7,
        "last_error": "RuntimeError: scrape parser broke",
        "last_error_at": T0 + 99,
        "last_ok_at": T0 + 92,
    }
    alert = why.tick_alert(_state(tick=tick), T0 + 100, clock)
    assert alert is not None
    assert "ticks are failing**: 7 in a row, 23 since it started" in alert
    assert "Last error at t+99: RuntimeError: scrape parser broke" in alert
    assert "last good tick was at t+92 (8 s ago)" in alert
    never = why.tick_alert(_state(tick=tick | {"last_ok_at": None}), T0 + 100, clock)
    assert never is not None and "No tick has succeeded yet" in never

    fine = {"ok": True, "failures_total": 2, "consecutive_failures": 0, "last_ok_at": T0 + 100}
    assert why.tick_alert(_state(tick=fine), T0 + 100, clock) is None


def test_an_older_controller_that_stopped_ticking_is_noticed_by_the_age_of_its_last_tick() -> None:
    assert why.tick_alert(_state(), T0 + 110, clock) is None
    quiet = why.tick_alert(_state(), T0 + 200, clock)
    assert quiet is not None and "No controller tick for 100 s" in quiet


def test_a_replica_that_does_not_apply_the_control_plane_is_named() -> None:
    replicas = {
        "r1": {"target": "http://r1", "obeying": True, "applied_version": 9},
        "r2": {
            "target": "http://r2",
            "obeying": False,
            "applied_version": 3,
            "published_version": 9,
            "disobeying_since": T0 + 40,
        },
    }
    (line,) = why.disobeying(_state(replicas=replicas), T0 + 100, clock)
    assert line.startswith("**r2 does not apply the control plane** since t+40 (60 s)")
    assert "reports control version 3, the controller published 9" in line
    assert why.disobeying(_state(), T0, clock) == []  # an older controller: no claim


def test_the_names_band_spans_each_stretch_and_strips_every_time_chart() -> None:
    history = [_tick(0, "db"), _tick(1, "db"), _tick(2, "cache"), _tick(3, "none"), _tick(4, "db")]
    spans = [(s.name, s.start - T0, s.end - T0) for s in bottleneck_spans(history)]
    assert spans == [("db", 0, 2), ("cache", 2, 3), ("none", 3, 4), ("db", 4, 5)]
    fig = latency_figure(history, None, 0.25)
    mark_bottlenecks(fig, history, 0.0)
    strip = [(s.name, s.x0 / 1000 - T0) for s in fig.layout.shapes]
    assert strip == [("bottleneck db", 0), ("bottleneck cache", 2), ("bottleneck db", 4)]


def test_an_unreadable_document_and_a_standby_controller_are_told() -> None:
    state = _state(
        control_error="ControlDocumentError: invalid control document: *boom*",
        control_stale=True,
        lease={"held": False, "holder": "host-b:41:x", "me": "host-a:7:y"},
    )
    lines = why.control_alerts(state)
    assert len(lines) == 2
    assert (
        "cannot be read**: ControlDocumentError: invalid control document: \\*boom\\*" in lines[0]
    )
    assert "last good copy (stale)" in lines[0]
    assert "host-b:41:x holds the writers' lease" in lines[1] and "(409)" in lines[1]
    fine = _state(lease={"held": True, "holder": "host-a:7:y", "me": "host-a:7:y"})
    assert why.control_alerts(fine) == []
    assert why.control_alerts(_state()) == []  # a controller that reports neither
