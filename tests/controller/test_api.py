"""The operator API over real HTTP: auth, validation, pins, pause, audit, and a mode
switched through the API reaching a running replica."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis

from surgeguard.controlplane import CONTROL_KEY
from tests.controller.conftest import AUTH, StartController
from tests.target_app.conftest import StartTarget


def _version(redis_client: redis.Redis) -> int:
    raw = redis_client.get(CONTROL_KEY)
    return 0 if raw is None else int(__import__("json").loads(raw)["version"])


WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("PUT", "/api/v1/modes/read_only", {"active": True, "reason": "drill"}),
    ("PUT", "/api/v1/knobs/concurrency_limit", {"value": 10, "pin": True, "reason": "drill"}),
    ("DELETE", "/api/v1/knobs/concurrency_limit/pin", {}),
    ("PUT", "/api/v1/autopilot", {"enabled": False, "reason": "drill"}),
    ("PUT", "/api/v1/chaos/db", {"latency_multiplier": 5, "error_rate": 0, "reason": "drill"}),
]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}]
)
def test_writes_without_the_right_token_get_401_and_change_nothing(
    start_target: StartTarget,
    start_controller: StartController,
    redis_client: redis.Redis,
    headers: dict[str, str],
) -> None:
    target = start_target()
    ctl = start_controller([target.url])
    before = _version(redis_client)
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        for method, path, body in WRITES:
            r = client.request(method, path, json=body or None, headers=headers)
            assert r.status_code == 401, (path, r.text)
        assert client.get("/api/v1/audit").json() == []
    assert _version(redis_client) == before


def test_no_configured_token_means_no_writes(
    start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url], admin_token=None)
    r = httpx.put(
        f"{ctl.url}/api/v1/autopilot",
        json={"enabled": False, "reason": "x"},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 401 and "no admin token is configured" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/v1/modes/panic", {"active": True, "reason": "x"}, 404, "unknown mode 'panic'"),
        ("/api/v1/knobs/threads", {"value": 3, "reason": "x"}, 404, "unknown knob 'threads'"),
        (
            "/api/v1/chaos/dns",
            {"latency_multiplier": 2, "reason": "x"},
            404,
            "unknown dependency 'dns'",
        ),
        (
            "/api/v1/knobs/concurrency_limit",
            {"value": 0, "reason": "x"},
            422,
            "concurrency_limit must be in [1, 10000]",
        ),
        ("/api/v1/knobs/bulkhead.db", {"value": 10**6, "reason": "x"}, 422, "[1, 10000]"),
        (
            "/api/v1/chaos/db",
            {"latency_multiplier": -1, "reason": "x"},
            422,
            "latency_multiplier: Input should be greater than or equal to 0.1 "
            "(allowed: [0.1, 100.0])",
        ),
        ("/api/v1/chaos/db", {"error_rate": 1.5, "reason": "x"}, 422, "error_rate"),
        ("/api/v1/modes/read_only", {"active": True}, 422, "reason: Field required"),
        ("/api/v1/modes/read_only", {"active": True, "reason": ""}, 422, "reason"),
        ("/api/v1/knobs/queue_limit", {"value": "lots", "reason": "x"}, 422, "value"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(
    start_target: StartTarget,
    start_controller: StartController,
    redis_client: redis.Redis,
    path: str,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    ctl = start_controller([start_target().url])
    before = _version(redis_client)
    r = httpx.put(f"{ctl.url}{path}", json=body, headers=AUTH, timeout=10)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert _version(redis_client) == before


def test_malformed_json_is_422(
    start_target: StartTarget, start_controller: StartController
) -> None:
    ctl = start_controller([start_target().url])
    r = httpx.put(
        f"{ctl.url}/api/v1/autopilot",
        content=b"{not json",
        headers={**AUTH, "content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 422


def _wait_for(check: Any, timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, "not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_mode_switched_through_the_api_reaches_the_replica_within_2s(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target()
    ctl = start_controller([target.url])
    with httpx.Client(timeout=10) as client:
        r = client.put(
            f"{ctl.url}/api/v1/modes/read_only",
            json={"active": True, "reason": "db failover"},
            headers=AUTH,
        )
        assert r.status_code == 200 and r.json()["modes"] == ["read_only"]
        took = _wait_for(
            lambda: client.get(f"{target.url}/readyz").json()["modes"] == ["read_only"], 2.0
        )
        assert took < 2.0
        write = client.post(
            f"{target.url}/orders",
            json={"item_id": 1, "quantity": 1},
            headers={"X-Api-Key": "demo-key"},
        )
        assert write.status_code == 503
        audit = client.get(f"{ctl.url}/api/v1/audit").json()
    assert audit[0]["what"] == "mode read_only"
    assert (audit[0]["old"], audit[0]["new"], audit[0]["reason"]) == (False, True, "db failover")
    assert audit[0]["who"] == "admin" and audit[0]["at"] > 0


def test_an_operator_knob_with_pin_reaches_the_replica_and_is_audited(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target(concurrency_limit=64)
    ctl = start_controller([target.url])
    with httpx.Client(timeout=10) as client:
        r = client.put(
            f"{ctl.url}/api/v1/knobs/concurrency_limit",
            json={"value": 12, "pin": True, "reason": "hold steady"},
            headers=AUTH,
        )
        assert r.status_code == 200
        assert r.json()["pins"] == ["concurrency_limit"]
        _wait_for(
            lambda: client.get(f"{target.url}/readyz").json()["knobs"]["concurrency_limit"] == 12,
            2.0,
        )
        entry = client.get(f"{ctl.url}/api/v1/audit").json()[0]
        assert entry["what"] == "knob concurrency_limit"
        assert entry["new"] == {"value": 12, "pinned": True}
        assert entry["old"]["pinned"] is False
        r = client.delete(
            f"{ctl.url}/api/v1/knobs/concurrency_limit/pin",
            params={"reason": "spike over"},
            headers=AUTH,
        )
        assert r.status_code == 200 and r.json()["pins"] == []
        assert client.get(f"{ctl.url}/api/v1/audit").json()[0]["reason"] == "spike over"


def test_pinned_knob_is_not_moved_by_the_controller(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target(concurrency_limit=40)
    # Everything is "too slow"; the loop-lag hold is off (cpu_saturated=0): on a busy
    # machine the test server's own loop lag would otherwise hold the limit (correctly)
    # and there would be no move for the pin to stop.
    ctl = start_controller([target.url], slo_s=0.0001, cpu_saturated=0)
    with httpx.Client(timeout=10) as client:
        client.put(
            f"{ctl.url}/api/v1/knobs/concurrency_limit",
            json={"value": 40, "pin": True, "reason": "pinned"},
            headers=AUTH,
        )
        for _ in range(4):
            for _ in range(20):
                client.get(f"{target.url}/ping")
            ctl.tick()
        decisions = client.get(f"{ctl.url}/api/v1/decisions").json()
    moves = [d for d in decisions if d["knob"] == "concurrency_limit"]
    assert moves and all(not d["applied"] and "pinned" in d["reason"] for d in moves)
    assert target.service.limiter.limit == 40


def test_paused_autopilot_records_what_it_would_have_done(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target(concurrency_limit=40)
    ctl = start_controller([target.url], slo_s=0.0001)
    with httpx.Client(timeout=10) as client:
        r = client.put(
            f"{ctl.url}/api/v1/autopilot",
            json={"enabled": False, "reason": "investigating"},
            headers=AUTH,
        )
        assert r.status_code == 200 and r.json()["autopilot"] is False
        for _ in range(3):
            for _ in range(20):
                client.get(f"{target.url}/ping")
            ctl.tick()
        state = client.get(f"{ctl.url}/api/v1/state").json()
        decisions = client.get(f"{ctl.url}/api/v1/decisions").json()
    assert state["control"]["autopilot"] is False
    assert any("would have done" in d["reason"] for d in decisions)
    assert target.service.limiter.limit == 40


def test_state_history_and_decisions_after_some_ticks(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target()
    ctl = start_controller([target.url])
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            for _ in range(10):
                client.get(f"{target.url}/items/3", headers={"X-Api-Key": "demo-key"})
            ctl.tick()
        state = client.get(f"{ctl.url}/api/v1/state").json()
        history = client.get(f"{ctl.url}/api/v1/history", params={"seconds": 60}).json()
        assert client.get(f"{ctl.url}/api/v1/history", params={"seconds": 0}).status_code == 422
    replica = target.service.replica
    assert state["replicas"][replica]["knobs"]["concurrency_limit"] == 64
    assert state["replicas"][replica]["signals"]["admitted_per_s"] > 0
    assert state["replicas"][replica]["signals"]["penalty_held"] == 0  # issue 11
    assert "penalty_holds_per_s" in state["replicas"][replica]["signals"]
    assert state["bottleneck"]["name"] in {
        "none",
        "admission",
        "db",
        "cache",
        "recommendations",
        "payments",
    }
    assert len(history) == 3
    assert history[-1]["replicas"][replica]["knobs"]["bulkhead.db"] == 16
    # Issue 16: how long the name has held, on the state and on each history point;
    # the ticks worked; the replica applies what is published.
    named = state["bottleneck"]
    assert named["since"] > 0 and named["held_s"] >= 0
    assert {"since", "held_s", "name", "sentence", "scores"} <= set(history[-1]["bottleneck"])
    assert history[-1]["bottleneck"]["since"] == named["since"]
    assert state["tick"]["ok"] is True and state["tick"]["consecutive_failures"] == 0
    assert state["tick"]["last_error"] is None and state["tick"]["last_ok_at"] > 0
    assert state["replicas"][replica]["obeying"] is True
    seen = state["replicas"][replica]
    assert 0 <= seen["applied_version"] <= seen["published_version"] <= state["control"]["version"]


def test_history_since_returns_only_newer_ticks(
    start_target: StartTarget, start_controller: StartController
) -> None:
    target = start_target()
    ctl = start_controller([target.url])
    for _ in range(3):
        httpx.get(f"{target.url}/ping", timeout=5)
        ctl.tick()
    with httpx.Client(base_url=ctl.url, timeout=10) as client:
        everything = client.get("/api/v1/history", params={"seconds": 60}).json()
        newer = client.get(
            "/api/v1/history", params={"seconds": 60, "since": everything[0]["at"]}
        ).json()
    assert [r["at"] for r in newer] == [r["at"] for r in everything[1:]]
    point = everything[-1]["replicas"][target.service.replica]["signals"]
    assert point["penalty_held"] == 0 and point["penalty_holds_per_s"] == 0  # issue 11
    # History points are compact: dependencies keep what the charts draw.
    assert set(point["dependencies"]["db"]) == {
        "p99_s",
        "utilisation",
        "limit",
        "error_rate",
        "timeout_rate",
    }
