"""Drill records and checks: pure, no Redis, no processes, no clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgeguard.cli.wiring import drill_scenarios
from surgeguard_controller.drills.drill import (
    LOST_AFTER_S,
    Drill,
    DrillError,
    DrillSpec,
    ScenarioInfo,
    check,
    ended,
    external_end,
    external_start,
    find_open_external,
    load_command,
    orphaned,
    scenario_defaults,
    settle,
    started,
    stop_requested,
)
from surgeguard_loadtest.scenarios import SCENARIOS, defaults

SCENARIOS_IN = drill_scenarios()  # the load tests' catalogue, as the CLI hands it in
T0 = 1_800_000_000.0
SPEC = DrillSpec("spike", 100, 60.0)


def _running() -> Drill:
    return started("d1", SPEC, who="10.0.0.1", reason="r", at=T0, out_dir=Path("/x"), pid=42)


def test_check_fills_in_the_scenarios_defaults() -> None:
    users, duration_s = defaults("soak")
    assert check("soak", None, None, scenarios=SCENARIOS_IN) == DrillSpec("soak", users, duration_s)
    assert check("soak", 7, 5, scenarios=SCENARIOS_IN) == DrillSpec("soak", 7, 5.0)
    assert set(scenario_defaults(SCENARIOS_IN)) == set(SCENARIOS)
    assert scenario_defaults(SCENARIOS_IN)["soak"] == {"users": users, "duration_s": duration_s}


def test_the_drills_know_only_the_scenarios_handed_in() -> None:
    """The controller does not import the load tests: any catalogue will do."""
    mine = {"warm_up": ScenarioInfo(users=3, duration_s=20.0, max_users=5)}
    assert check("warm_up", None, None, scenarios=mine) == DrillSpec("warm_up", 3, 20.0)
    assert scenario_defaults(mine) == {"warm_up": {"users": 3, "duration_s": 20.0}}
    with pytest.raises(DrillError) as caught:
        check("warm_up", 6, None, scenarios=mine)
    assert (caught.value.status, caught.value.message) == (422, "users must be in [1, 5], got 6")
    with pytest.raises(DrillError) as caught:
        check("spike", None, None, scenarios=mine)
    assert caught.value.message == "unknown scenario 'spike': allowed are warm_up"
    with pytest.raises(DrillError) as caught:
        external_start(
            "e", "soak", users=None, duration_s=None, who="w", reason="", at=T0, scenarios={}
        )
    assert caught.value.status == 404 and "no scenarios were given" in caught.value.message


@pytest.mark.parametrize(
    ("scenario", "users", "duration_s", "status", "says"),
    [
        ("flood", None, None, 404, "unknown scenario 'flood': allowed are spike, step"),
        ("spike", 0, None, 422, "users must be in [1, 10000], got 0"),
        ("spike", 10_001, None, 422, "users must be in [1, 10000], got 10001"),
        ("spike", 5, 4.9, 422, "duration_s must be in [5, 3600] seconds, got 4.9"),
        ("spike", 5, float("nan"), 422, "duration_s must be in [5, 3600] seconds"),
        ("spike", 5, 3600.5, 422, "duration_s must be in [5, 3600] seconds"),
    ],
)
def test_check_names_the_field_and_its_range(
    scenario: str, users: int | None, duration_s: float | None, status: int, says: str
) -> None:
    with pytest.raises(DrillError) as caught:
        check(scenario, users, duration_s, scenarios=SCENARIOS_IN)
    assert caught.value.status == status and says in caught.value.message


def test_a_drill_asked_to_stop_is_stopped_whatever_its_exit_code() -> None:
    asked = stop_requested(_running(), who="ops", reason="enough")
    for code in (0, -15, -9, 1):
        done = ended(asked, exit_code=code, at=T0 + 5, log_tail="noise")
        assert (done.status, done.exit_code, done.ended_at) == ("stopped", code, T0 + 5)
        assert done.error is None and (done.stopped_by, done.stop_reason) == ("ops", "enough")


def test_a_drill_ending_on_its_own_is_finished_on_0_and_failed_otherwise() -> None:
    assert ended(_running(), exit_code=0, at=T0 + 60).status == "finished"
    failed = ended(_running(), exit_code=2, at=T0 + 1, log_tail="bad host\n")
    assert (failed.status, failed.error) == ("failed", "bad host")
    killed = ended(_running(), exit_code=-9, at=T0 + 1)
    assert (killed.status, killed.error) == ("failed", "exited with -9")


def test_a_record_survives_json_and_ignores_fields_it_does_not_know() -> None:
    drill = _running()
    assert Drill.from_json(drill.to_json()) == drill
    assert Drill.from_json({**drill.to_json(), "later_field": 1}) == drill


def test_an_orphaned_controller_drill_is_failed_with_why() -> None:
    gone = orphaned(_running(), at=T0 + 9)
    assert (gone.status, gone.ended_at) == ("failed", T0 + 9)
    assert "controller stopped" in (gone.error or "")


def test_an_external_run_starts_and_ends_once() -> None:
    run = external_start(
        "e1", "step", users=None, duration_s=None, who="w", reason="", at=T0, scenarios=SCENARIOS_IN
    )
    assert (run.source, run.status, run.pid, run.out_dir) == ("external", "running", None, None)
    done = external_end(run, at=T0 + 30)
    assert (done.status, done.ended_at) == ("finished", T0 + 30)
    with pytest.raises(DrillError) as caught:
        external_end(done, at=T0 + 31)
    assert caught.value.status == 409
    with pytest.raises(DrillError):
        external_start(
            "e2",
            "flood",
            users=None,
            duration_s=None,
            who="w",
            reason="",
            at=T0,
            scenarios=SCENARIOS_IN,
        )


def test_an_external_run_never_ended_reads_as_lost_after_its_expected_end() -> None:
    run = external_start(
        "e1", "step", users=10, duration_s=60, who="w", reason="", at=T0, scenarios=SCENARIOS_IN
    )
    assert settle(run, T0 + 60 + LOST_AFTER_S) == run
    lost = settle(run, T0 + 61 + LOST_AFTER_S)
    assert (lost.status, lost.ended_at) == ("lost", T0 + 60)
    assert settle(_running(), T0 + 1e6) == _running()  # the controller watches its own


def test_an_end_mark_without_an_id_finds_the_newest_open_run_of_its_scenario() -> None:
    def run(drill_id: str, scenario: str) -> Drill:
        return external_start(
            drill_id,
            scenario,
            users=None,
            duration_s=None,
            who="w",
            reason="",
            at=T0,
            scenarios=SCENARIOS_IN,
        )

    newest_first = [run("c", "soak"), run("b", "step"), run("a", "step")]
    found = find_open_external(newest_first, "step")
    assert found is not None and found.id == "b"
    assert find_open_external([_running()], "spike") is None  # not an external one


def test_the_load_command_carries_every_drill_argument() -> None:
    command = load_command(
        ("py", "-m", "surgeguard", "load"),
        DrillSpec("step", 20, 6.0),
        target="http://t:8000",
        controller_url="http://c:8001",
        out_dir=Path("/data/drills/x"),
        drill_id="d1",
    )
    assert command == [
        *("py", "-m", "surgeguard", "load"),
        *("--scenario", "step", "--host", "http://t:8000", "--users", "20"),
        *("--duration", "6", "--out", "/data/drills/x", "--controller", "http://c:8001"),
        *("--no-marks", "--drill-id", "d1"),
    ]
