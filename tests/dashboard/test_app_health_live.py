"""Issue 16 end to end (Streamlit's AppTest over a real controller and real replicas,
real Redis): the page names a replica that does not apply the control plane and says
the controller's decisions for it were not applied; a tick that fails shows on the
page with its error, and goes away once a tick works again; the last move's reason is
the controller's own, in full."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_dashboard.model import Decision
from surgeguard_dashboard.why import move
from tests.dashboard.conftest import API_KEY, APP, Stack, StartController, StartTarget

NOT_APPLIED = "(replica does not apply the control plane: not applied)"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _state(url: str) -> Any:
    return httpx.get(f"{url}/api/v1/state", timeout=10).json()


def test_a_replica_that_ignores_the_control_plane_is_flagged_on_the_page(
    start_target: StartTarget,
    start_controller: StartController,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One replica reads its control plane from another Redis database, so it never
    sees what the controller publishes; everything is "too slow" (SLO 0.1 ms), so the
    controller cuts every tick."""
    obeys = start_target(replica_id="obeys", concurrency_limit=40)
    ignores = start_target(
        replica_id="ignores", concurrency_limit=40, redis_url=f"{redis_server.url}/3"
    )
    ctl = start_controller([obeys.url, ignores.url], slo_s=0.0001, cooldown_s=0.0, hold_rule=False)
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", ctl.url)
    with httpx.Client(headers=API_KEY, timeout=10) as client:
        for _ in range(12):  # well past the grace before a replica is called disobedient
            for target in (obeys, ignores):
                for _ in range(5):
                    client.get(f"{target.url}/ping")
            ctl.tick()
            if not _state(ctl.url)["replicas"]["ignores"]["obeying"]:
                break
    assert not _state(ctl.url)["replicas"]["ignores"]["obeying"]

    at = _app()
    flags = [e.value for e in at.error if "does not apply the control plane" in e.value]
    assert len(flags) == 1 and flags[0].startswith("**ignores does not apply"), flags
    decisions = next(t.value for t in at.table if "applied" in t.value.columns)
    theirs = decisions[decisions["replica"] == "ignores"]
    assert len(theirs) and not theirs.iloc[0]["applied"]
    assert theirs.iloc[0]["reason"].endswith(NOT_APPLIED)


def test_a_failing_tick_shows_with_its_error_and_goes_when_ticks_work_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    decider = stack.controller.controller.decider

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the decider exploded")

    working = decider.decide
    monkeypatch.setattr(decider, "decide", explode)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            stack.controller.tick()
    at = _app()
    (alert,) = [e.value for e in at.error]
    assert "The controller's ticks are failing**: 3 in a row" in alert
    assert "RuntimeError: the decider exploded" in alert
    assert "The last good tick was at" in alert

    monkeypatch.setattr(decider, "decide", working)
    stack.traffic_and_ticks(ticks=1)
    at.run()
    assert not at.error


def test_the_last_move_on_the_page_is_the_controllers_with_its_whole_reason(
    start_target: StartTarget,
    start_controller: StartController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = start_target(concurrency_limit=40)
    ctl = start_controller([target.url], slo_s=0.0001, cooldown_s=0.0, hold_rule=False)
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", ctl.url)
    with httpx.Client(base_url=target.url, headers=API_KEY, timeout=10) as client:
        for _ in range(3):
            for _ in range(10):
                client.get("/ping")
            ctl.tick()
    change = _state(ctl.url)["last_change"]
    assert change is not None and change["reason"]

    at = _app()
    (line,) = [m.value for m in at.markdown if m.value.startswith("**Last move**")]
    assert f"`{move(Decision.parse(change))}`" in line
    assert change["reason"].rstrip(". ") in line.replace("\\", "")  # whole, unescaped


def test_a_corrupt_control_document_shows_on_the_page_and_goes_once_repaired(
    start_target: StartTarget,
    start_controller: StartController,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: something else wrote the control key; the controller keeps ticking,
    and the page says the document cannot be read until an operator write repairs it."""
    import redis

    from surgeguard.controlplane import CONTROL_KEY
    from tests.controller.conftest import AUTH

    target = start_target()
    ctl = start_controller([target.url])
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", ctl.url)
    ctl.tick()
    plain = redis.Redis.from_url(redis_server.url)
    try:
        plain.set(CONTROL_KEY, b"\x00not json at all")
    finally:
        plain.close()
    ctl.tick()  # does not fail
    at = _app()
    said = [e.value for e in at.error if "control document cannot be read" in e.value]
    assert len(said) == 1, [e.value for e in at.error]
    assert "nothing is published until" in said[0]
    repaired = httpx.put(
        f"{ctl.url}/api/v1/modes/read_only",
        json={"active": False, "reason": "repair the plane"},
        headers=AUTH,
        timeout=10,
    )
    assert repaired.status_code == 200, repaired.text
    ctl.tick()
    at = _app()
    assert not [e.value for e in at.error if "control document cannot be read" in e.value]
