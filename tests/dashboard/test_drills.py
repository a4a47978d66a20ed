"""Drills as the dashboard reads them from the API: parsing, the one-line summary, the
table rows. Pure (the bands on the charts are in test_figures.py)."""

from __future__ import annotations

import math

from surgeguard_dashboard.drills import Drill, Drills, describe, rows

T0 = 1_800_000_000.0
RUNNING = {
    "id": "d1",
    "scenario": "spike",
    "users": 500,
    "duration_s": 110.0,
    "source": "controller",
    "who": "alice",
    "reason": "rehearsal",
    "started_at": T0,
    "ended_at": None,
    "status": "running",
    "exit_code": None,
    "out_dir": "/data/drills/d1",
    "pid": 42,
    "error": None,
}


def test_the_drills_answer_parses_with_unknowns_as_none_or_nan() -> None:
    external = {"id": "e1", "scenario": "soak", "source": "external", "status": "running"}
    drills = Drills.parse(
        {
            "scenarios": {"spike": {"users": 10000, "duration_s": 110.0}, "bad": 3},
            "current": RUNNING,
            "recent": [RUNNING, external | {"started_at": T0 - 50, "users": None}],
        }
    )
    assert drills.scenarios == {"spike": (10000, 110.0)}
    assert drills.current is not None and drills.own_running == drills.current
    soak = drills.recent[1]
    assert soak.users is None and math.isnan(soak.duration_s) and math.isnan(soak.ended_at)
    assert Drills.parse(None) == Drills()  # nothing usable: no drills, not an error


def test_only_the_controllers_own_running_drill_can_be_stopped_from_here() -> None:
    external = Drills.parse({"current": RUNNING | {"source": "external"}})
    assert external.current is not None and external.own_running is None
    ended = Drills.parse({"current": RUNNING | {"status": "stopped", "ended_at": T0 + 5}})
    assert ended.own_running is None


def test_a_drill_is_described_in_one_line_with_how_far_it_is() -> None:
    drill = Drill.parse(RUNNING)
    assert describe(drill, T0 + 42.4) == (
        "**spike** running: 42 s of 110 s, 500 users, started here by alice (rehearsal)"
    )
    done = Drill.parse(RUNNING | {"status": "finished", "ended_at": T0 + 110})
    assert describe(done, T0 + 9999).startswith("**spike** finished: 110 s of 110 s")
    outside = Drill.parse({"scenario": "soak", "status": "running", "started_at": T0})
    assert "users unknown, started outside the controller by unknown" in describe(outside, T0)


def test_table_rows_say_when_what_and_how_it_ended() -> None:
    failed = RUNNING | {
        "status": "failed",
        "ended_at": T0 + 3,
        "exit_code": 2,
        "error": "starting\nerror: the target does not answer\n",
    }
    table = rows([Drill.parse(RUNNING), Drill.parse(failed)], lambda at: f"t{at - T0:g}", T0 + 20)
    assert [(r["started"], r["status"], r["ran, s"]) for r in table] == [
        ("t0", "running", 20),
        ("t0", "failed", 3),
    ]
    assert table[1]["error"] == "error: the target does not answer"
