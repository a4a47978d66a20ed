"""A drill's chaos never outlives the drill (issue 13, "Drills always clean up"): its load
generator killed, the controller stopped mid-drill, the controller killed and started
again. Real processes throughout: a real controller (uvicorn, embedded Redis), a real
target, and ``fake_load.py`` as the drill's child, which sets ``db`` 5x slower through
its drill and puts it back over HTTP when it ends, as ``slow_dependency`` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis

from surgeguard.controlplane import CONTROL_KEY
from surgeguard.runtime.process import free_port
from surgeguard_controller.drills.store import DRILLS_KEY
from surgeguard_controller.store import AUDIT_KEY
from tests.controller.conftest import AUTH, TOKEN, StartController
from tests.controller.test_drills_api import (  # noqa: F401 - a fixture, re-exported
    START,
    StartDrills,
    alive,
    start_drills,
    until,
)
from tests.support.processes import clean_env, wait_healthy
from tests.target_app.conftest import StartTarget

SLOW_DB = "db:5"
FIVE_X = {"latency_multiplier": 5.0, "error_rate": 0.0}
CALM = {"latency_multiplier": 1.0, "error_rate": 0.0}
CONTROLLER_SCRIPT = Path(__file__).with_name("drill_controller.py")


def chaos(r: redis.Redis) -> dict[str, Any]:
    """The chaos in the control document in Redis (what every replica applies)."""
    raw = r.get(CONTROL_KEY)
    return {} if raw is None else dict(json.loads(raw).get("chaos", {}))  # type: ignore[arg-type]


def audit(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(AUDIT_KEY, 0, -1)]  # type: ignore[union-attr]


def drill_record(r: redis.Redis, drill_id: str) -> dict[str, Any]:
    records = [json.loads(e) for e in r.lrange(DRILLS_KEY, 0, -1)]  # type: ignore[union-attr]
    return next(d for d in records if d["id"] == drill_id)


def undone_by_controller(r: redis.Redis, drill_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in audit(r)
        if e["who"] == "controller" and e["what"] == "chaos db" and drill_id in e["reason"]
    ]


def test_a_killed_drills_chaos_is_undone_and_audited(
    start_drills: StartDrills,  # noqa: F811 - the fixture imported above
    redis_client: redis.Redis,
) -> None:
    d = start_drills(FAKE_LOAD_CHAOS=SLOW_DB)
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until(lambda: chaos(redis_client) == {"db": FIVE_X}, what="the drill slowed db")
    assert drill_record(redis_client, drill["id"])["chaos"] == {"db": FIVE_X}

    os.kill(drill["pid"], signal.SIGKILL)  # its own undo never runs
    until(lambda: d.get()["current"] is None, what="the runner saw its child die")
    assert chaos(redis_client) == {}
    [entry] = undone_by_controller(redis_client, drill["id"])
    assert (entry["old"], entry["new"]) == (FIVE_X, CALM)
    assert "exit -9" in entry["reason"] and "chaos undone" in entry["reason"]
    done = d.get()["recent"][0]
    assert (done["status"], done["exit_code"], done["chaos"]) == ("failed", -9, {"db": CALM})
    # A late call from a drill that has ended is refused: its chaos would outlive it.
    late = d.http.put(
        f"/api/v1/drills/{drill['id']}/chaos/db",
        json={**FIVE_X, "reason": "too late"},
        headers=AUTH,
    )
    assert late.status_code == 409 and "is not running" in late.json()["detail"], late.text
    assert chaos(redis_client) == {}


def test_a_drill_that_puts_its_chaos_back_itself_leaves_nothing_to_undo(
    start_drills: StartDrills,  # noqa: F811 - the fixture imported above
    redis_client: redis.Redis,
) -> None:
    d = start_drills(FAKE_LOAD_CHAOS=SLOW_DB)
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until(lambda: chaos(redis_client) == {"db": FIVE_X}, what="the drill slowed db")
    r = d.http.post("/api/v1/drills/stop", json={"reason": "enough"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "stopped", r.text
    assert chaos(redis_client) == {}
    assert undone_by_controller(redis_client, drill["id"]) == []  # the drill's own undo did it
    assert [e["reason"] for e in audit(redis_client) if e["what"] == "chaos db"] == [
        f"drill {drill['id']}: fake load",
        f"drill {drill['id']}: fake load",
    ]


def test_the_controllers_shutdown_undoes_a_drills_chaos_in_redis(
    start_drills: StartDrills,  # noqa: F811 - the fixture imported above
    redis_client: redis.Redis,
) -> None:
    d = start_drills(FAKE_LOAD_CHAOS=SLOW_DB)
    drill = d.http.post("/api/v1/drills", json=START, headers=AUTH).json()
    until(lambda: chaos(redis_client) == {"db": FIVE_X}, what="the drill slowed db")

    d.controller.server.stop()  # uvicorn closes its socket, then the lifespan ends
    assert not alive(drill["pid"])
    log = (Path(drill["out_dir"]) / "drill.log").read_text()
    assert "chaos db x1: ConnectError" in log, log  # the child's own undo could not get through
    assert chaos(redis_client) == {}
    [entry] = undone_by_controller(redis_client, drill["id"])
    assert entry["old"] == FIVE_X and "chaos undone" in entry["reason"]
    stored = drill_record(redis_client, drill["id"])
    assert (stored["status"], stored["chaos"]) == ("stopped", {"db": CALM})


def test_a_restarted_controller_undoes_the_chaos_a_killed_controllers_drill_left(
    start_target: StartTarget,
    start_controller: StartController,
    redis_client: redis.Redis,
    redis_server: Any,
    tmp_path: Path,
) -> None:
    target = start_target()
    port = free_port()
    url, out = f"http://127.0.0.1:{port}", str(tmp_path / "drills")
    first = subprocess.Popen(
        [sys.executable, str(CONTROLLER_SCRIPT), redis_server.url, target.url, str(port), out],
        env=clean_env(FAKE_LOAD_CHAOS=SLOW_DB, SURGEGUARD_ADMIN_TOKEN=TOKEN),
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"{url}/healthz", first, None)
        r = httpx.post(f"{url}/api/v1/drills", json=START, headers=AUTH, timeout=10)
        assert r.status_code == 202, r.text
        drill = r.json()
        until(lambda: chaos(redis_client) == {"db": FIVE_X}, what="the drill slowed db")
    finally:
        first.kill()  # SIGKILL: no shutdown path of its own runs
        first.wait()
    until(lambda: not alive(drill["pid"]), what="the drill's child died with its controller")
    assert chaos(redis_client) == {"db": FIVE_X}  # left behind: every replica still slowed

    second = start_controller([target.url])
    # At once, or as soon as the killed controller's lease (3 ticks) has run out.
    until(lambda: chaos(redis_client) == {}, what="the restarted controller undid the chaos")
    until(lambda: drill_record(redis_client, drill["id"])["chaos"] == {"db": CALM})
    [entry] = undone_by_controller(redis_client, drill["id"])
    assert entry["old"] == FIVE_X and "left by a controller that stopped" in entry["reason"]
    recent = httpx.get(f"{second.url}/api/v1/drills", timeout=10).json()["recent"]
    assert (recent[0]["id"], recent[0]["status"]) == (drill["id"], "failed")
    # The next start finds nothing left: no second entry.
    start_controller([target.url])
    assert len(undone_by_controller(redis_client, drill["id"])) == 1
