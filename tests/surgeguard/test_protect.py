"""``surgeguard.protect`` around an app of a user's own making, on real uvicorn servers:
the door, the app's own bulkhead as a FastAPI dependency and as ``async with``, its
own mode, its lifespan, the metrics, and the control plane when there is one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families

from surgeguard import Dependency, ModeSpec, Priority, Protection, Route, protect
from surgeguard.controlplane import CONTROL_CHANNEL, CONTROL_KEY
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import ReplicaSettings, SettingsError
from tests.support.polling import until_truthy
from tests.support.servers import ServerThread

PAUSED = "reservations_paused"


class Shop:
    """The user's app: a stock read inside its ``inventory_db`` bulkhead (held until the
    test opens the gate), reservations that honour the app's own mode."""

    def __init__(self, **settings: Any) -> None:
        self.events: list[str] = []
        self.gate: asyncio.Event | None = None
        self.chaos: list[dict[str, float]] = []  # what each applied document asked

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.events.append("app started")
            yield
            self.events.append("app stopped")

        app = FastAPI(lifespan=lifespan)
        self.guard: Protection = protect(
            app,
            routes={
                "/stock/*": Route("stock", Priority.NORMAL),
                "/reservations": Route("reservations", Priority.CRITICAL),
            },
            dependencies=[Dependency("inventory_db", slots=1, max_slots=20)],
            modes=[ModeSpec(PAUSED, "New reservations get 503; stock reads go on.")],
            settings=ReplicaSettings(**settings),
            replica="shop-1",
            on_control=lambda state: self.chaos.append(
                {d: c.latency_multiplier for d, c in state.chaos.items()}
            ),
        )
        guard = self.guard

        @app.get("/stock/{sku}", dependencies=[Depends(guard.slot("inventory_db"))])
        async def stock(sku: str) -> dict[str, str]:
            await self._wait()
            return {"sku": sku}

        @app.post("/reservations")
        async def reserve() -> JSONResponse:
            if PAUSED in guard.modes:
                return JSONResponse({"paused": True}, status_code=503)
            async with guard.bulkheads["inventory_db"].slot():
                return JSONResponse({"reserved": True})

    async def _wait(self) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        await self.gate.wait()

    async def open_gate(self) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.gate.set()


@contextlib.contextmanager
def serving(shop: Shop) -> Iterator[ServerThread]:
    server = ServerThread(shop.guard).start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.call(shop.open_gate())
        server.stop()


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_apps_own_bulkhead_answers_503_when_full_and_the_door_429_past_its_limit() -> None:
    shop = Shop(concurrency_limit=2, queue_limit=0)
    with serving(shop) as server, concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(httpx.get, f"{server.url}/stock/a1", timeout=30)
        until_truthy(
            lambda: shop.guard.bulkheads["inventory_db"].in_flight == 1, 10, "a call inside"
        )
        # The bulkhead's one slot is taken: the next stock read fails fast with a 503.
        full = httpx.get(f"{server.url}/stock/b2", timeout=10)
        assert full.status_code == 503, full.text
        assert full.headers["retry-after"] == "1"
        assert full.json()["dependency"] == "inventory_db"
        # Two requests in flight (the held one and a second held one): the door says 429.
        second = pool.submit(httpx.post, f"{server.url}/reservations", timeout=30)
        assert second.result(timeout=10).status_code == 503  # the slot is still taken
        shop.guard.limiter.set_limits(limit=1, queue_limit=0, queue_timeout_s=0.1)
        shed = httpx.get(f"{server.url}/stock/c3", timeout=10)
        assert shed.status_code == 429 and int(shed.headers["retry-after"]) >= 1
        server.call(shop.open_gate())
        assert held.result(timeout=10).json() == {"sku": "a1"}
    assert shop.events == ["app started", "app stopped"]


def test_metrics_say_what_the_app_declared_and_the_lifespan_runs_both_sides() -> None:
    shop = Shop()
    with serving(shop) as server:
        assert shop.events == ["app started"]
        found = samples(server.url)
        assert (
            found[("surgeguard_knob_maximum", frozenset({("knob", "bulkhead.inventory_db")}))] == 20
        )
        assert (
            found[("surgeguard_knob_default", frozenset({("knob", "bulkhead.inventory_db")}))] == 1
        )
        modes = {
            dict(labels)["mode"]: dict(labels)
            for (name, labels) in found
            if name == "surgeguard_mode_info"
        }
        by_order = sorted(modes, key=lambda m: int(modes[m]["order"]))
        assert by_order == ["shed_sheddable", "read_only", PAUSED]
        assert modes[PAUSED]["door"] == "false" and modes["read_only"]["door"] == "true"
        assert found[("surgeguard_control_plane_version", frozenset())] == -1  # no Redis
        assert found[("surgeguard_slo_seconds", frozenset())] == 0.25
        assert ("surgeguard_dependency_limit", frozenset({("dependency", "inventory_db")})) in found
        # The loop-lag monitor runs once the protection has started.
        until_truthy(
            lambda: (
                samples(server.url).get(("surgeguard_event_loop_lag_seconds_count", frozenset()), 0)
                > 0
            ),
            10,
            "loop lag samples",
        )
        assert shop.guard.watcher is None  # static knobs
    assert shop.events == ["app started", "app stopped"]
    assert shop.guard._running is False


def test_a_start_up_mode_the_app_does_not_declare_stops_start_up_naming_it() -> None:
    with pytest.raises(SettingsError, match="MODES: unknown mode 'serve_stale': allowed are"):
        Shop(modes="serve_stale")
    shop = Shop(modes=PAUSED)
    assert shop.guard.modes == {PAUSED}
    with pytest.raises(KeyError, match=r"'payments' is not declared \(declared: inventory_db\)"):
        shop.guard.slot("payments")


def test_client_keys_are_asked_for_only_when_there_are_some() -> None:
    open_shop, keyed = Shop(), Shop(client_keys="till-7:critical")
    with serving(open_shop) as a, serving(keyed) as b:
        assert httpx.post(f"{a.url}/reservations", timeout=10).status_code == 200
        assert httpx.post(f"{b.url}/reservations", timeout=10).status_code == 401
        ok = httpx.post(f"{b.url}/reservations", headers={"X-Api-Key": "till-7"}, timeout=10)
        assert ok.status_code == 200


def test_the_control_plane_tunes_the_apps_own_knobs_and_switches_its_own_mode(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    shop = Shop(redis_url=redis_server.url, control_poll_ms=100)
    with serving(shop) as server:
        document = {
            "version": 5,
            "knobs": {"bulkhead.inventory_db": 7, "concurrency_limit": 30, "bulkhead.db": 2},
            "modes": [PAUSED],
            "chaos": {"inventory_db": {"latency_multiplier": 4.0, "error_rate": 0.0}},
        }
        redis_client.set(CONTROL_KEY, json.dumps(document))
        redis_client.publish(CONTROL_CHANNEL, "5")
        until_truthy(lambda: shop.guard.knobs.bulkhead("inventory_db") == 7, 10, "knobs applied")
        assert shop.guard.bulkheads["inventory_db"].limit == 7
        assert shop.guard.limiter.limit == 30
        assert "bulkhead.db" not in shop.guard.knobs  # another app's knob: left out
        assert shop.chaos[-1] == {"inventory_db": 4.0}  # the app's to inject (drills)
        paused = httpx.post(f"{server.url}/reservations", timeout=10)
        assert paused.status_code == 503 and paused.json() == {"paused": True}
        found = samples(server.url)
        assert found[("surgeguard_knob_value", frozenset({("knob", "bulkhead.inventory_db")}))] == 7
        assert found[("surgeguard_mode_active", frozenset({("mode", PAUSED)}))] == 1
        assert found[("surgeguard_control_plane_version", frozenset())] == 5
        # Outside what the app declares: refused whole, the knobs stay.
        redis_client.set(
            CONTROL_KEY, json.dumps({"version": 6, "knobs": {"bulkhead.inventory_db": 21}})
        )
        redis_client.publish(CONTROL_CHANNEL, "6")
        assert shop.guard.watcher is not None
        watcher = shop.guard.watcher
        until_truthy(lambda: watcher.rejected_documents > 0, 10, "the refusal")
        assert "[1, 20]" in watcher.last_error
        assert shop.guard.bulkheads["inventory_db"].limit == 7
