"""The example service (examples/inventory_service.py), not the demo, under a real
controller (issue 12): the controller learns the app's own dependency ``inventory_db``
and mode ``reservations_paused`` from its /metrics, tunes its ``bulkhead.inventory_db``
and ``concurrency_limit`` under an overload, refuses operator values outside what the
app declared and names it does not know, and the dashboard offers what the app declared.

Real processes: the example served by uvicorn (``python examples/inventory_service.py``),
the session's embedded Redis, ``surgeguard controller`` (250 ms ticks); the load comes
from this process over loopback.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from streamlit.testing.v1 import AppTest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import until, until_truthy
from tests.support.processes import child, clean_env, free_port, surgeguard
from tests.support.rawhttp import closed_loop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inventory_service.py"
DASHBOARD = ROOT / "dashboard" / "surgeguard_dashboard" / "app.py"
TOKEN = "inventory-admin-token-24-chars"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KNOB = "bulkhead.inventory_db"
MODE = "reservations_paused"


@dataclass(frozen=True)
class Stack:
    app: str
    controller: str

    def api(self, path: str) -> Any:
        return httpx.get(f"{self.controller}/api/v1{path}", timeout=10).json()

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.put(f"{self.controller}/api/v1{path}", json=body, headers=AUTH, timeout=10)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the example's own /metrics (None: not exported)."""
        text = httpx.get(f"{self.app}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def reserve(self) -> httpx.Response:
        return httpx.post(
            f"{self.app}/reservations", json={"sku": "bolt-m6", "quantity": 1}, timeout=10
        )


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The example and a controller on one control plane, as the README runs them. The
    penalty box is off: the load below retries soon after a 429 on purpose, to keep
    the database overloaded (the box has its own tests)."""
    redis.Redis.from_url(redis_server.url).flushall()  # no document of another test
    env = clean_env(
        SURGEGUARD_REDIS_URL=redis_server.url,
        SURGEGUARD_ADMIN_TOKEN=TOKEN,
        SURGEGUARD_CONTROL_POLL_MS="200",
        SURGEGUARD_PENALTY_BOX="false",
    )
    log = tmp_path_factory.mktemp("inventory") / "example.log"
    port, cport = free_port(), free_port()
    app, controller = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{cport}"
    example = [sys.executable, str(EXAMPLE), "--port", str(port)]
    with child(example, health_url=f"{app}/healthz", log=log, env=env, cwd=ROOT):
        args = ("controller", "--target", app, "--port", str(cport), "--tick-ms", "250")
        with surgeguard(*args, env=env, health_url=f"{controller}/healthz"):
            running = Stack(app, controller)
            until_truthy(
                lambda: running.api("/state")["dependencies"], 15, "the controller reading the app"
            )
            yield running


def test_the_controller_learns_the_apps_own_dependency_knobs_and_modes(stack: Stack) -> None:
    state = stack.api("/state")
    assert state["dependencies"] == ["inventory_db"]
    spec = state["knob_specs"][KNOB]
    assert (spec["minimum"], spec["maximum"], spec["default"]) == (2, 64, 32)
    assert state["bounds"][KNOB] == [2, 64]
    assert {"concurrency_limit", "queue_limit", "queue_timeout_ms", KNOB} == set(state["bounds"])
    # The app's mode beside the library's two; none of the demo's.
    assert set(state["modes_available"]) == {"shed_sheddable", "read_only", MODE}
    assert "stock reads keep working" in state["modes_available"][MODE]
    assert state["modes_declared"][MODE] == {"door": False, "auto_degrade": False}


def _effective(control: dict[str, Any], replica: str, knob: str) -> int | None:
    own = control["replicas"].get(replica, {})
    value = own.get(knob, control["knobs"].get(knob))
    return int(value) if value is not None else None


@pytest.mark.slow
def test_an_overload_tunes_the_apps_own_bulkhead_and_limit(stack: Stack) -> None:
    async def load() -> dict[int, int]:
        # Two calm seconds first: the controller learns inventory_db's healthy latency.
        await closed_loop(stack.app, 2, 2.0, lambda: "/stock/calm")
        report = await closed_loop(
            stack.app,
            60,
            10.0,
            lambda: f"/stock/sku-{random.randint(1, 10_000)}",
            pause_after_rejection_s=0.1,
        )
        return report.statuses()

    statuses = asyncio.run(load())
    # The database really was overloaded: its bulkhead or the door turned calls away.
    assert statuses.get(200, 0) > 200, statuses
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.get(429, 0) + statuses.get(503, 0) > 0, statuses

    decisions = stack.api("/decisions?limit=2000")
    cuts = {d["knob"] for d in decisions if d["action"] == "cut" and d["applied"]}
    assert {KNOB, "concurrency_limit"} <= cuts, decisions[:10]
    bulkhead_cuts = [d for d in decisions if d["knob"] == KNOB and d["action"] == "cut"]
    assert all(
        "inventory_db p99" in d["reason"] or "timeouts" in d["reason"] for d in bulkhead_cuts
    )

    # The replica applies what the controller published for it.
    replica = next(iter(stack.api("/state")["replicas"]))

    def followed() -> tuple[int, int] | None:
        control = stack.api("/state")["control"]
        bulkhead = _effective(control, replica, KNOB)
        limit = _effective(control, replica, "concurrency_limit")
        applied = (
            stack.metric("surgeguard_knob_value", knob=KNOB),
            stack.metric("surgeguard_dependency_limit", dependency="inventory_db"),
            stack.metric("surgeguard_knob_value", knob="concurrency_limit"),
            stack.metric("surgeguard_concurrency_limit"),
        )
        if bulkhead is None or limit is None or applied != (bulkhead, bulkhead, limit, limit):
            return None
        return bulkhead, limit

    bulkhead, limit = until(followed, 10, "the replica applying the published knobs")
    assert 2 <= bulkhead <= 64 and 1 <= limit <= 10_000


def test_an_operator_value_outside_the_declared_bounds_is_refused(stack: Stack) -> None:
    for value in (1, 65):
        answer = stack.put(f"/knobs/{KNOB}", {"value": value, "reason": "too far"})
        assert answer.status_code == 422, answer.text
        assert "[2, 64]" in answer.json()["detail"], answer.text
    assert stack.metric("surgeguard_knob_minimum", knob=KNOB) == 2


def test_unknown_knobs_and_modes_are_404_naming_the_declared_ones(stack: Stack) -> None:
    knob = stack.put("/knobs/bulkhead.db", {"value": 10, "reason": "the demo's knob"})
    assert knob.status_code == 404, knob.text
    assert KNOB in knob.json()["detail"] and "concurrency_limit" in knob.json()["detail"]

    mode = stack.put("/modes/serve_stale", {"active": True, "reason": "the demo's mode"})
    assert mode.status_code == 404, mode.text
    assert MODE in mode.json()["detail"] and "read_only" in mode.json()["detail"]


def test_the_apps_own_mode_switches_and_its_handler_honours_it(stack: Stack) -> None:
    assert stack.reserve().status_code == 201
    try:
        answer = stack.put(f"/modes/{MODE}", {"active": True, "reason": "stocktake"})
        assert answer.status_code == 200, answer.text
        assert MODE in answer.json()["modes"]

        paused = until(
            lambda: r if (r := stack.reserve()).status_code == 503 else None,
            10,
            "reservations paused",
        )
        assert paused.headers["Retry-After"] == "5"
        assert httpx.get(f"{stack.app}/stock/bolt-m6", timeout=10).status_code == 200
        assert stack.metric("surgeguard_mode_active", mode=MODE) == 1
    finally:
        stack.put(f"/modes/{MODE}", {"active": False, "reason": "stocktake done"})
    until(lambda: stack.reserve().status_code == 201 or None, 10, "reservations resumed")


def test_the_dashboard_offers_the_apps_dependency_and_mode(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGEGUARD_CONTROLLER_URL", stack.controller)
    at = AppTest.from_file(DASHBOARD, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    assert at.selectbox(key="chaos_dependency").options == ["inventory_db"]
    assert KNOB in at.selectbox(key="knob_name").options
    mode_buttons = {b.key for b in at.button if b.key and b.key.startswith("mode_submit_")}
    assert mode_buttons == {f"mode_submit_{m}" for m in ("read_only", "shed_sheddable", MODE)}
    assert any("stock reads keep working" in c.value for c in at.caption)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bottleneck = next(c for c in charts if c["layout"]["uirevision"] == "bottleneck")
    assert list(bottleneck["data"][0]["x"]) == ["inventory_db"]
    knobs = next(c for c in charts if c["layout"]["uirevision"] == "controller")
    assert KNOB in [t["name"] for t in knobs["data"]]

    # An operator switches the app's own mode from the dashboard; the app honours it.
    at.text_input(key="admin_token").input(TOKEN).run()
    try:
        at.text_input(key=f"mode_reason_{MODE}").input("stocktake")
        at.button(key=f"mode_submit_{MODE}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(f"Mode {MODE} is now ON" in s.value for s in at.success)
        until(lambda: stack.reserve().status_code == 503 or None, 10, "reservations paused")
    finally:
        stack.put(f"/modes/{MODE}", {"active": False, "reason": "stocktake done"})
