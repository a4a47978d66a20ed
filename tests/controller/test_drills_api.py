"""The drills API over real HTTP, with a real Redis and real child processes: auth,
validation, one drill at a time, start -> stop, how a drill ends (finished, failed,
killed), the controller's shutdown, external marks, and one real ``surgeguard load``.

Most tests run ``tests/controller/fake_load.py`` in place of ``surgeguard load`` (the
runner takes the command to run): fast, and independent of Locust."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from surgeguard_controller.drills.runner import LOG_NAME, DrillRunner
from surgeguard_controller.drills.store import DRILLS_KEY
from surgeguard_controller.loop import Controller
from tests.controller.conftest import AUTH, TOKEN, RunningController, StartController
from tests.support.clock import FakeClock
from tests.support.processes import clean_env
from tests.target_app.conftest import RunningTarget, StartTarget

FAKE_LOAD = Path(__file__).with_name("fake_load.py")
START = {"scenario": "step", "users": 20, "duration_s": 30, "reason": "rehearsal"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def until(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        time.sleep(0.05)


@dataclass
class Drills:
    target: RunningTarget
    controller: RunningController
    runner: DrillRunner
    http: httpx.Client

    def get(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/api/v1/drills").json()
        return body

    def audit(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.http.get("/api/v1/audit").json()
        return entries


StartDrills = Callable[..., Drills]


@pytest.fixture
def start_drills(
    start_target: StartTarget, start_controller: StartController, tmp_path: Path
) -> Iterator[StartDrills]:
    """``start_drills(command=, stop_timeout_s=, clock=, **child_env)``: a target and a
    controller whose drills run ``command`` (default the fake load generator) with
    ``child_env`` in its environment. Every child is gone after the test, however it
    ends (the controller's shutdown stops it; this kills whatever is left)."""
    runners: list[DrillRunner] = []
    clients: list[httpx.Client] = []

    def start(
        *,
        command: tuple[str, ...] = (sys.executable, str(FAKE_LOAD)),
        stop_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        **child_env: str,
    ) -> Drills:
        target = start_target()

        def runner(controller: Controller) -> DrillRunner:
            made = DrillRunner(
                controller.redis,
                target=target.url,
                out_root=tmp_path / "drills",
                admin_token=TOKEN,
                command=command,
                env=clean_env(**child_env),
                stop_timeout_s=stop_timeout_s,
                poll_s=0.05,
                clock=clock,
            )
            runners.append(made)
            return made

        ctl = start_controller([target.url], drills=runner)
        clients.append(httpx.Client(base_url=ctl.url, timeout=30))
        return Drills(target, ctl, runners[-1], clients[-1])

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        for made in runners:
            process = made.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_drill_writes_without_the_right_token_get_401_and_change_nothing(
    start_drills: StartDrills, headers: dict[str, str]
) -> None:
    d = start_drills()
    for path, body in [
        ("/api/v1/drills", START),
        ("/api/v1/drills/stop", {"reason": "x"}),
        ("/api/v1/drills/marks", {"event": "start", "scenario": "spike"}),
    ]:
        r = d.http.post(path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
    assert d.get()["recent"] == [] and d.get()["current"] is None
    assert d.audit() == []
    assert d.runner.process is None and not d.runner.out_root.exists()


def test_the_scenarios_and_their_defaults_are_listed(start_drills: StartDrills) -> None:
    body = start_drills().get()
    assert set(body["scenarios"]) == {
        "spike",
        "step",
        "soak",
        "slow_dependency",
        "retry_storm",
        "square",
    }
    assert all(set(v) == {"users", "duration_s"} for v in body["scenarios"].values())
    assert body["current"] is None and body["recent"] == []


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"scenario": "tsunami"}, 404, "unknown scenario 'tsunami': allowed are spike, step"),
        ({"users": 0}, 422, "users must be in [1, 10000], got 0"),
        ({"users": 10_001}, 422, "users must be in [1, 10000], got 10001"),
        ({"duration_s": 2}, 422, "duration_s must be in [5, 3600] seconds, got 2"),
        ({"duration_s": 3601}, 422, "duration_s must be in [5, 3600] seconds"),
        ({"reason": ""}, 422, "reason"),
        ({"users": "many"}, 422, "users"),
    ],
)
def test_a_bad_drill_is_refused_naming_what_is_wrong(
    start_drills: StartDrills, change: dict[str, Any], status: int, says: str
) -> None:
    d = start_drills()
    r = d.http.post("/api/v1/drills", json={**START, **change}, headers=AUTH)
    assert r.status_code == status and says in r.json()["detail"], r.text
    assert d.runner.process is None and d.get()["recent"] == [] and d.audit() == []


def test_start_then_stop_runs_the_load_generator_and_ends_it(start_drills: StartDrills) -> None:
    d = start_drills()
    r = d.http.post("/api/v1/drills", json=START, headers=AUTH)
    assert r.status_code == 202, r.text
    drill = r.json()
    assert (drill["scenario"], drill["users"], drill["duration_s"]) == ("step", 20, 30.0)
    assert (drill["status"], drill["source"], drill["reason"]) == (
        "running",
        "controller",
        START["reason"],
    )
    assert drill["ended_at"] is None and alive(drill["pid"])
    assert d.get()["current"]["id"] == drill["id"]

    # What the load generator was told: the first target, this controller, its own dir.
    args_file = Path(drill["out_dir"]) / "args.json"
    until(args_file.exists, what="the child started")
    args = json.loads(args_file.read_text())
    assert args["host"] == d.target.url and args["controller"] == d.controller.url
    assert (args["scenario"], args["users"], args["duration"]) == ("step", "20", "30")
    assert args["out"] == drill["out_dir"] and args["token"] == TOKEN

    again = d.http.post("/api/v1/drills", json=START, headers=AUTH)
    assert again.status_code == 409 and drill["id"] in again.json()["detail"]

    r = d.http.post("/api/v1/drills/stop", json={"reason": "seen enough"}, headers=AUTH)
    assert r.status_code == 200, r.text
    stopped = r.json()
    assert (stopped["status"], stopped["exit_code"]) == ("stopped", 0)
    assert stopped["stop_reason"] == "seen enough" and stopped["ended_at"] >= drill["started_at"]
    assert not alive(drill["pid"])
    assert (Path(drill["out_dir"]) / "summary.json").exists()  # it stopped the way it should
    assert "step: 0 s" in (Path(drill["out_dir"]) / LOG_NAME).read_text()

    body = d.get()
    assert body["current"] is None and body["recent"][0]["status"] == "stopped"
    assert len(body["recent"]) == 1
    assert d.http.post("/api/v1/drills/stop", json={"reason": "x"}, headers=AUTH).status_code == 409
    assert [(a["what"], a["old"], a["new"]) for a in d.audit()] == [
        ("drill step", "running", "stopped"),
        ("drill step", None, {"id": drill["id"], "users": 20, "duration_s": 30.0}),
    ]


def test_a_drill_that_ends_by_itself_is_finished_and_a_failing_one_keeps_its_log(
    start_drills: StartDrills,
) -> None:
    d = start_drills(FAKE_LOAD_SECONDS="0.2")
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until(lambda: d.get()["current"] is None, what="the drill ended")
    done = d.get()["recent"][0]
    assert (done["id"], done["status"], done["exit_code"], done["error"]) == (
        drill["id"],
        "finished",
        0,
        None,
    )

    d.runner._env["FAKE_LOAD_EXIT"] = "3"  # the next child fails at once
    failing = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until(lambda: d.get()["current"] is None, what="the failing drill ended")
    failed = d.get()["recent"][0]
    assert (failed["id"], failed["status"], failed["exit_code"]) == (failing["id"], "failed", 3)
    assert "boom: the target is unreachable" in failed["error"]


def test_a_drill_that_ignores_sigterm_is_killed_after_the_stop_timeout(
    start_drills: StartDrills,
) -> None:
    d = start_drills(stop_timeout_s=0.5, FAKE_LOAD_IGNORE_TERM="1")
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until((Path(drill["out_dir"]) / "args.json").exists, what="the child started")
    stopped = d.http.post("/api/v1/drills/stop", json={"reason": "x"}, headers=AUTH).json()
    assert (stopped["status"], stopped["exit_code"]) == ("stopped", -9)
    assert not alive(drill["pid"])


def test_a_drill_running_well_past_its_duration_is_stopped_by_the_controller(
    start_drills: StartDrills,
) -> None:
    clock = FakeClock()
    d = start_drills(clock=clock)
    drill = d.http.post("/api/v1/drills", json={**START, "duration_s": 5}, headers=AUTH).json()
    clock.advance(5 + 60 + 0.1)  # its duration and the runner's grace (60 s) are over
    until(lambda: d.get()["current"] is None, what="the overrunning drill stopped")
    done = d.get()["recent"][0]
    assert (done["id"], done["status"], done["stopped_by"]) == (
        drill["id"],
        "stopped",
        "controller",
    )
    assert done["stop_reason"] == "still running 60 s past its 5 s"
    assert not alive(drill["pid"])


def test_the_controllers_shutdown_stops_a_running_drill(
    start_drills: StartDrills, redis_client: redis.Redis
) -> None:
    d = start_drills()
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    d.controller.server.stop()
    assert not alive(drill["pid"])
    stored = json.loads(redis_client.lindex(DRILLS_KEY, 0))  # type: ignore[arg-type]
    assert (stored["status"], stored["stopped_by"]) == ("stopped", "controller")
    assert stored["stop_reason"] == "the controller is shutting down"


def test_a_drill_left_running_by_a_vanished_controller_is_closed_at_start(
    start_target: StartTarget, start_controller: StartController, redis_client: redis.Redis
) -> None:
    left = {"id": "old", "scenario": "spike", "users": 5, "duration_s": 60.0}
    left |= {"source": "controller", "who": "x", "reason": "x", "started_at": 1.0}
    left |= {"status": "running", "pid": 999_999}
    redis_client.lpush(DRILLS_KEY, json.dumps(left))
    ctl = start_controller([start_target().url])
    recent = httpx.get(f"{ctl.url}/api/v1/drills", timeout=10).json()["recent"]
    assert recent[0]["status"] == "failed" and "controller stopped" in recent[0]["error"]


def test_an_external_run_marks_its_start_and_end(start_drills: StartDrills) -> None:
    d = start_drills()
    mark = {"event": "start", "scenario": "spike", "users": 100, "duration_s": 60}
    r = d.http.post("/api/v1/drills/marks", json={**mark, "reason": "from a laptop"}, headers=AUTH)
    assert r.status_code == 201, r.text
    started = r.json()
    assert (started["source"], started["status"], started["users"]) == ("external", "running", 100)
    assert d.get()["current"]["id"] == started["id"]
    # An external run does not hold the controller's own drills back.
    assert d.runner.current is None

    end = {"event": "end", "scenario": "spike", "id": started["id"]}
    r = d.http.post("/api/v1/drills/marks", json=end, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "finished", r.text
    assert d.get()["current"] is None
    assert d.http.post("/api/v1/drills/marks", json=end, headers=AUTH).status_code == 409

    # Without an id, the end closes the newest open run of that scenario.
    d.http.post("/api/v1/drills/marks", json={"event": "start", "scenario": "soak"}, headers=AUTH)
    r = d.http.post("/api/v1/drills/marks", json={"event": "end", "scenario": "soak"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["scenario"] == "soak"
    nothing = {"event": "end", "scenario": "soak"}
    r = d.http.post("/api/v1/drills/marks", json=nothing, headers=AUTH)
    assert r.status_code == 404 and "no running external drill" in r.json()["detail"]
    r = d.http.post("/api/v1/drills/marks", json={**mark, "scenario": "nope"}, headers=AUTH)
    assert r.status_code == 404 and "unknown scenario 'nope'" in r.json()["detail"]
    assert [a["what"] for a in d.audit()] == ["drill soak (external)"] * 2 + [
        "drill spike (external)"
    ] * 2


@pytest.mark.slow
def test_a_real_load_drill_finishes_and_leaves_its_report(start_drills: StartDrills) -> None:
    """``surgeguard load`` itself (Locust in a child process) against a real target."""
    d = start_drills(command=(sys.executable, "-m", "surgeguard", "load"), stop_timeout_s=20)
    body = {"scenario": "step", "users": 20, "duration_s": 6, "reason": "the real thing"}
    r = d.http.post("/api/v1/drills", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    drill = r.json()
    until(lambda: d.get()["current"] is None, timeout_s=90, what="the real drill ended")
    done = d.get()["recent"][0]
    log = (Path(drill["out_dir"]) / LOG_NAME).read_text(errors="replace")
    assert (done["status"], done["exit_code"]) == ("finished", 0), log[-2000:]
    assert (Path(drill["out_dir"]) / "summary.json").exists(), log[-2000:]
    assert (Path(drill["out_dir"]) / "report.html").exists(), log[-2000:]
