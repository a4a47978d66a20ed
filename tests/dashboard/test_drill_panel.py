"""The drills panel (Streamlit's AppTest) against a real controller and target: a drill
started and stopped from the sidebar with the token, refused without it, and marked
on the charts. The controller runs the fake load generator (``tests/controller/
fake_load.py``), so no Locust is involved."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller
from tests.dashboard.conftest import APP, TOKEN, Stack, StartController, StartTarget
from tests.support.polling import until_truthy
from tests.support.processes import clean_env

FAKE_LOAD = Path(__file__).resolve().parents[1] / "controller" / "fake_load.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def drill_stack(
    start_target: StartTarget,
    start_controller: StartController,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Stack]:
    runners: list[DrillRunner] = []

    def runner(controller: Controller) -> DrillRunner:
        runners.append(
            DrillRunner(
                controller.redis,
                target=target.url,
                out_root=tmp_path / "drills",
                admin_token=TOKEN,
                command=(sys.executable, str(FAKE_LOAD)),
                env=clean_env(FAKE_LOAD_CHAOS="db:5"),  # it slows db through its drill
                stop_timeout_s=5.0,
                poll_s=0.05,
            )
        )
        return runners[-1]

    target = start_target()
    stack = Stack(target, start_controller([target.url], drills=runner))
    stack.traffic_and_ticks(ticks=2, requests=5)
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", stack.url)
    try:
        yield stack
    finally:  # the controller's shutdown stops a drill; this is for when it could not
        for made in runners:
            if made.process is not None and made.process.poll() is None:
                made.process.kill()
                made.process.wait()


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _until_chaos(stack: Stack, deps: set[str], timeout_s: float = 10.0) -> None:
    def chaos() -> set[str]:
        return set(httpx.get(f"{stack.url}/api/v1/state", timeout=10).json()["control"]["chaos"])

    until_truthy(lambda: chaos() == deps, timeout_s, f"chaos on {deps}", every_s=0.05)


def _drills(stack: Stack) -> Any:
    return httpx.get(f"{stack.url}/api/v1/drills", timeout=10).json()


def _latency_shapes(at: AppTest) -> list[str]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]  # type: ignore[attr-defined]
    latency = next(s for s in specs if s["layout"]["uirevision"] == "latency")
    return [s.get("name", "") for s in latency["layout"].get("shapes", [])]


def test_the_drills_panel_starts_and_stops_a_drill_and_the_charts_mark_it(
    drill_stack: Stack,
) -> None:
    at = _app()
    assert "No load-test drill is running." in [c.value for c in at.caption]
    at.text_input(key="admin_token").input(TOKEN).run()
    assert at.button(key="drill_stop_submit").disabled  # nothing to stop yet

    at.selectbox(key="drill_scenario").select("step").run()
    at.number_input(key="drill_users_step").set_value(20)
    at.number_input(key="drill_duration_step").set_value(30)
    at.text_input(key="drill_reason").input("rehearsal")
    at.button(key="drill_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = [s.value for s in at.success]
    assert any("Drill step started: 20 users for 30 s" in s for s in said), said
    current = _drills(drill_stack)["current"]
    assert (current["scenario"], current["users"], current["status"]) == ("step", 20, "running")
    assert _alive(current["pid"])

    assert at.button(key="drill_submit").disabled  # one at a time
    assert not at.button(key="drill_stop_submit").disabled
    assert any("Load-test drill **step** running" in str(i.value) for i in at.info)
    # The chaos it set reads above the charts (issue 13), not only in the sidebar.
    _until_chaos(drill_stack, {"db"})
    at.run()
    warned = [str(w.value) for w in at.main.warning]
    assert any(w.startswith("Chaos on db: latency x5, errors 0%.") for w in warned), warned

    at.text_input(key="drill_stop_reason").input("seen enough")
    at.button(key="drill_stop_submit").click().run()
    said = [s.value for s in at.success]
    assert any("Drill step stopped" in s for s in said), said
    assert not _alive(current["pid"])
    body = _drills(drill_stack)
    assert body["current"] is None and body["recent"][0]["status"] == "stopped"
    assert not any("Chaos on" in str(w.value) for w in at.main.warning)  # it put db back

    drill_stack.controller.tick()  # a history point after the drill ended
    at.run()
    assert "drill: step" in _latency_shapes(at)
    table = next(d.value for d in at.dataframe if "scenario" in d.value.columns)
    assert table.iloc[0]["scenario"] == "step" and table.iloc[0]["status"] == "stopped"


def test_the_drills_panel_is_locked_without_the_token_and_says_why_it_was_refused(
    drill_stack: Stack,
) -> None:
    at = _app()
    assert at.button(key="drill_submit").disabled and at.button(key="drill_stop_submit").disabled
    assert at.text_input(key="drill_reason").disabled

    at.text_input(key="admin_token").input("not-the-token").run()
    at.text_input(key="drill_reason").input("try")
    at.button(key="drill_submit").click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert "failed: missing or wrong bearer token (HTTP 401)" in errors[0]
    assert _drills(drill_stack)["recent"] == []
