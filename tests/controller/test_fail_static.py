"""Fail static survives the loss of Redis's data (issue 13): real replicas, a real
controller, a real Redis that is flushed, corrupted, stopped, or shared by two
controllers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import redis

from surgeguard.controlplane import CONTROL_KEY
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.runtime.process import free_port
from surgeguard_controller.lease import LEASE_KEY
from surgeguard_controller.store import AUDIT_KEY
from tests.controller.conftest import AUTH, RunningController, StartController
from tests.support.polling import until_truthy
from tests.target_app.conftest import StartTarget

PIN = {"value": 30, "pin": True, "reason": "spike: hold the door at 30"}
READ_ONLY = {"active": True, "reason": "spike: no writes"}
NO_AUTOPILOT = {"enabled": False, "reason": "hands on"}


def readyz(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/readyz", timeout=5).json()
    return body


def state(controller: RunningController) -> dict[str, Any]:
    response = httpx.get(f"{controller.url}/api/v1/state", timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def put(controller: RunningController, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{controller.url}/api/v1{path}", json=body, headers=AUTH, timeout=5)


def operator_intent(controller: RunningController) -> int:
    """Pin concurrency_limit at 30, read_only on, autopilot off; the version written."""
    controller.tick()
    assert put(controller, "/knobs/concurrency_limit", PIN).status_code == 200
    assert put(controller, "/modes/read_only", READ_ONLY).status_code == 200
    response = put(controller, "/autopilot", NO_AUTOPILOT)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def enforces_intent(ready: dict[str, Any]) -> bool:
    return bool(ready["knobs"]["concurrency_limit"] == 30 and ready["modes"] == ["read_only"])


def test_redis_restarted_empty_replicas_keep_their_knobs_and_the_controller_restores_them(
    start_target: StartTarget, start_controller: StartController, redis_client: redis.Redis
) -> None:
    target = start_target()
    controller = start_controller([target.url])
    written = operator_intent(controller)
    until_truthy(lambda: readyz(target.url)["control_plane"]["version"] == written, 5, "applied")

    redis_client.flushall()  # what a Redis restarted without its data looks like

    # The replica saw the document gone and kept enforcing what it applied.
    gone = until_truthy(
        lambda: (r := readyz(target.url))["control_plane"]["last_error"] and r, 5, "gone"
    )
    assert "gone" in gone["control_plane"]["last_error"]
    assert enforces_intent(gone) and gone["control_plane"]["version"] == written
    assert target.service.limiter.limit == 30

    controller.tick()  # one tick finds the document gone and restores it
    restored = state(controller)["control"]
    assert restored["version"] > written
    assert restored["knobs"]["concurrency_limit"] == 30
    assert restored["pins"] == ["concurrency_limit"]
    assert restored["modes"] == ["read_only"]
    assert restored["autopilot"] is False
    assert restored["restored_from"][1] == written
    [entry] = [json.loads(r) for r in redis_client.lrange(AUDIT_KEY, 0, -1)]
    assert entry["what"] == "control document restored"
    assert entry["who"] == "controller" and "gone" in entry["reason"]
    assert entry["old"]["version"] == written and entry["new"]["version"] == restored["version"]

    # The replica takes the restored document as newer: same knobs and modes, no error.
    ready = until_truthy(
        lambda: (r := readyz(target.url))["control_plane"]["version"] == restored["version"] and r,
        5,
        "restored document applied",
    )
    assert enforces_intent(ready) and ready["control_plane"]["last_error"] is None

    # A controller that never saw the document (restarted too) rebuilds it from what
    # the replicas report, above the version they apply; it writes once the old
    # controller's lease is gone.
    redis_client.flushall()
    fresh = start_controller([target.url])
    fresh.tick()  # reads the replicas, finds no document, restores it
    rebuilt = state(fresh)["control"]
    assert rebuilt["version"] > restored["version"]
    assert rebuilt["knobs"]["concurrency_limit"] == 30 and rebuilt["modes"] == ["read_only"]
    assert rebuilt["pins"] == ["concurrency_limit"] and rebuilt["autopilot"] is False
    ready = until_truthy(
        lambda: (r := readyz(target.url))["control_plane"]["version"] == rebuilt["version"] and r,
        5,
        "rebuilt document applied",
    )
    assert enforces_intent(ready)
    assert target.service.limiter.limit == 30


def test_a_document_that_goes_backwards_is_not_applied(
    start_target: StartTarget, start_controller: StartController, redis_client: redis.Redis
) -> None:
    """A failover to a lagging copy: an older version must not undo a newer one."""
    target = start_target()
    controller = start_controller([target.url])
    written = operator_intent(controller)
    until_truthy(lambda: readyz(target.url)["control_plane"]["version"] == written, 5, "applied")
    redis_client.set(CONTROL_KEY, json.dumps({"version": written - 1, "knobs": {}}))
    kept = until_truthy(
        lambda: (r := readyz(target.url))["control_plane"]["last_error"] and r, 5, "refusal"
    )
    assert "not newer" in kept["control_plane"]["last_error"]
    assert enforces_intent(kept)
    controller.tick()
    back = state(controller)["control"]
    assert back["version"] > written and back["pins"] == ["concurrency_limit"]


def test_a_corrupt_document_neither_stops_the_controller_nor_its_writes(
    start_target: StartTarget, start_controller: StartController, redis_client: redis.Redis
) -> None:
    target = start_target()
    controller = start_controller([target.url])
    written = operator_intent(controller)
    redis_client.set(CONTROL_KEY, b"\x00not a control document")

    controller.tick()  # raised before, on every tick
    controller.tick()
    seen = state(controller)
    assert "invalid control document" in seen["control_error"]
    assert seen["control"]["version"] == written  # the last good one, marked
    assert seen["control_stale"] is True
    assert seen["tick"]["consecutive_failures"] == 0

    # The next operator write repairs it, keeping what the operators had set.
    response = put(controller, "/knobs/queue_limit", {"value": 12, "reason": "repair"})
    assert response.status_code == 200, response.text
    repaired = json.loads(redis_client.get(CONTROL_KEY) or b"{}")
    assert repaired["version"] > written
    assert repaired["knobs"]["queue_limit"] == 12 and repaired["knobs"]["concurrency_limit"] == 30
    assert repaired["pins"] == ["concurrency_limit"] and repaired["autopilot"] is False
    controller.tick()
    assert state(controller)["control_error"] is None
    audit = [json.loads(r)["what"] for r in redis_client.lrange(AUDIT_KEY, 0, -1)]
    assert audit[:2] == ["knob queue_limit", "control document restored"]  # one transaction
    until_truthy(lambda: readyz(target.url)["knobs"]["queue_limit"] == 12, 5, "repaired applied")
    assert enforces_intent(readyz(target.url))


def test_two_controllers_one_writes_and_the_other_takes_over_when_it_stops(
    start_target: StartTarget, start_controller: StartController, redis_client: redis.Redis
) -> None:
    target = start_target()
    first = start_controller([target.url], tick_s=0.5)  # the lease lasts 3 ticks: 1.5 s
    second = start_controller([target.url], tick_s=0.5)
    first.tick()
    second.tick()
    me = state(first)["lease"]["me"]
    assert state(first)["lease"] == {"held": True, "holder": me, "me": me}
    waiting = state(second)["lease"]
    assert waiting["held"] is False and waiting["holder"] == me

    first.tick()  # renewed: it holds the lease for the next 1.5 s
    refused = put(second, "/knobs/concurrency_limit", PIN)
    assert refused.status_code == 409
    assert me in refused.json()["detail"]
    assert redis_client.get(CONTROL_KEY) is None  # nothing written
    assert put(first, "/knobs/concurrency_limit", PIN).status_code == 200
    second.tick()
    assert state(second)["control"]["pins"] == ["concurrency_limit"]  # it reads

    first.server.stop()  # the holder stops: it gives the lease up on its way out
    assert redis_client.get(LEASE_KEY) is None
    second.tick()  # so the standby takes over at its next tick, not after the TTL
    assert state(second)["lease"]["held"] is True
    assert state(second)["lease"]["holder"] == state(second)["lease"]["me"] != me
    response = put(second, "/modes/read_only", READ_ONLY)
    assert response.status_code == 200, response.text
    assert response.json()["pins"] == ["concurrency_limit"]


def test_state_answers_while_redis_is_down(
    start_target: StartTarget, start_controller: StartController, tmp_path: Path
) -> None:
    own = EmbeddedRedis(data_dir=tmp_path / "redis")
    own.start()
    try:
        target = start_target(redis_url=own.url)
        controller = start_controller([target.url], redis_url=own.url)
        written = operator_intent(controller)
        controller.tick()
        own.stop()
        seen = state(controller)
        assert seen["control_stale"] is True and seen["control_error"]
        assert seen["control"]["version"] == written
        assert seen["control"]["pins"] == ["concurrency_limit"]
        assert "concurrency_limit" in seen["knob_specs"]
    finally:
        own.stop()


READS = ("/decisions", "/audit", "/history")


def test_reads_and_writes_say_503_naming_redis_while_it_is_down_and_answer_at_once_after(
    start_target: StartTarget, start_controller: StartController, tmp_path: Path
) -> None:
    """After a restart, the first read is answered although every connection the
    controller had open to Redis died with it; while Redis is gone, a 503 naming it,
    never a 500, and a refused write is not half-applied."""
    own = EmbeddedRedis(data_dir=tmp_path / "redis", port=free_port())  # same port again
    own.start()
    try:
        target = start_target(redis_url=own.url)
        controller = start_controller([target.url], redis_url=own.url)
        operator_intent(controller)
        controller.tick()
        for path in READS:  # each read leaves its connection idle in the pool
            assert httpx.get(f"{controller.url}/api/v1{path}", timeout=5).status_code == 200
        own.stop()
        own.start()  # a restart between two reads: the pooled connections are dead
        for path in READS:
            again = httpx.get(f"{controller.url}/api/v1{path}", timeout=5)
            assert again.status_code == 200, (path, again.text)

        own.stop()
        for path in READS:
            down = httpx.get(f"{controller.url}/api/v1{path}", timeout=5)
            assert down.status_code == 503, (path, down.text)
            assert "Redis cannot answer" in down.json()["detail"]
            assert down.headers["Retry-After"] == "1"
        refused = put(controller, "/modes/read_only", {"active": False, "reason": "over"})
        assert refused.status_code == 503, refused.text
        assert "Redis" in refused.json()["detail"]

        own.start()  # its data kept (a clean stop), its connections all gone
        audit = httpx.get(f"{controller.url}/api/v1/audit", timeout=5)
        assert audit.status_code == 200, audit.text
        assert len(audit.json()) == 3  # the three operator writes, not the refused one
        for path in ("/decisions", "/history"):
            again = httpx.get(f"{controller.url}/api/v1{path}", timeout=5)
            assert again.status_code == 200, (path, again.text)
        assert state(controller)["control"]["modes"] == ["read_only"]  # not half-applied
    finally:
        own.stop()
