"""Degradation modes over real HTTP: each one set at start (``modes=``) and switched at
run time through the control plane, against a real uvicorn server and a real Redis."""

from __future__ import annotations

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.modes import READ_ONLY, SHED_SHEDDABLE
from surgeguard_target_app.cache import ReadThroughCache
from surgeguard_target_app.declaration import RECOMMENDATIONS_OFF, SERVE_STALE
from surgeguard_target_app.jobs.streams import EMAIL_STREAM
from tests.support.clock import FakeClock
from tests.support.polling import eventually
from tests.target_app.conftest import API_KEY, SIGNUP, RunningTarget, StartTarget, applied

SHEDDABLE = {**API_KEY, "X-Priority": "sheddable"}
NORMAL = {**API_KEY, "X-Priority": "normal"}
CRITICAL = {**API_KEY, "X-Priority": "critical"}
ORDER = {"item_id": 1, "quantity": 1}


async def switch(writer: ControlPlaneWriter, client: httpx.AsyncClient, *modes: str) -> None:
    """Set exactly ``modes`` through the control plane and wait until the replica has them."""
    state = await writer.set_modes(frozenset(modes))
    await eventually(lambda: applied(client, state.version), what=f"modes {sorted(modes)} applied")
    assert (await client.get("/readyz")).json()["modes"] == sorted(modes)


async def mode_active(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        s.labels["mode"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "surgeguard_mode_active"
    }


def connect(target: RunningTarget) -> httpx.AsyncClient:
    # A new connection per request: these tests send request after request right after
    # a rejection, which the penalty box would (rightly) hold as an impatient client;
    # they are about the modes (the box has its own tests in tests/surgeguard).
    return httpx.AsyncClient(
        base_url=target.url, timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)
    )


# -- shed_sheddable ---------------------------------------------------------------------------


async def assert_sheddable_shed(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/items/1", headers=SHEDDABLE),
        await client.get("/recommendations", headers=API_KEY),
    ):  # sheddable route
        assert response.status_code == 429, response.text
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["reason"] == "mode"
    assert (await client.get("/items/1", headers=NORMAL)).status_code == 200
    assert (await client.get("/items/1", headers=CRITICAL)).status_code == 200
    assert (await client.get("/items/1", headers=API_KEY)).status_code == 200
    assert (await client.post("/orders", json=ORDER, headers=API_KEY)).status_code == 201


async def assert_sheddable_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/items/1", headers=SHEDDABLE)).status_code == 200
    assert (await client.get("/recommendations", headers=API_KEY)).status_code == 200


async def test_shed_sheddable_set_at_start(start_target: StartTarget) -> None:
    target = start_target(modes="shed_sheddable")
    async with connect(target) as client:
        await assert_sheddable_shed(client)
        assert (await mode_active(client))["shed_sheddable"] == 1.0
        text = (await client.get("/metrics")).text
    shed = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "surgeguard_rejections_total"
        and s.labels["reason"] == "mode"
        and s.labels["priority"] == "sheddable"
    ]
    assert shed == [2.0]


async def test_shed_sheddable_switched_at_runtime(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target()
    async with connect(target) as client:
        await assert_sheddable_served(client)
        await switch(writer, client, SHED_SHEDDABLE)
        await assert_sheddable_shed(client)
        await switch(writer, client)
        await assert_sheddable_served(client)


# -- recommendations_off ------------------------------------------------------------------------


async def test_recommendations_off_set_at_start(start_target: StartTarget) -> None:
    target = start_target(modes="recommendations_off")
    recommendations = target.service.dependencies["recommendations"]
    async with connect(target) as client:
        for page in (1, 2, 1):
            feed = await client.get(f"/feed?page={page}", headers=API_KEY)
            assert feed.status_code == 200
            assert "recommendations_off" in feed.headers["X-Degraded"]
            assert feed.json()["recommendations"] == []
            assert len(feed.json()["items"]) == 20
        assert (await mode_active(client))["recommendations_off"] == 1.0
    assert recommendations.calls == 0


async def test_recommendations_off_switched_at_runtime(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target()
    recommendations = target.service.dependencies["recommendations"]
    async with connect(target) as client:
        full = await client.get("/feed", headers=API_KEY)
        assert full.status_code == 200 and full.json()["recommendations"]
        assert "X-Degraded" not in full.headers
        assert recommendations.calls == 1

        await switch(writer, client, RECOMMENDATIONS_OFF)
        for _ in range(3):
            feed = await client.get("/feed", headers=API_KEY)
            assert feed.status_code == 200
            assert feed.headers["X-Degraded"] == "recommendations_off"
            assert feed.json()["items"] == full.json()["items"]
        assert recommendations.calls == 1

        await switch(writer, client)
        back = await client.get("/feed", headers=API_KEY)
        assert back.json()["recommendations"] and "X-Degraded" not in back.headers
    assert recommendations.calls == 2


# -- serve_stale --------------------------------------------------------------------------------


def fake_clock_cache(target: RunningTarget) -> FakeClock:
    """Give the service a cache whose freshness follows a fake clock (ttl 5 s, no
    jitter), so a test can make an entry stale without waiting."""
    clock = FakeClock()
    service = target.service

    async def install() -> None:
        service.cache = ReadThroughCache(
            service.redis,
            service.bulkheads["cache"],
            ttl_s=5.0,
            ttl_jitter=0.0,
            remote_latency=service.dependencies["cache"].call,
            clock=clock,
        )

    target.server.call(install())
    return clock


async def test_serve_stale_set_at_start(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target(modes="serve_stale")
    clock = fake_clock_cache(target)
    db = target.service.dependencies["db"]
    async with connect(target) as client:
        fresh = await client.get("/items/9", headers=API_KEY)
        assert fresh.status_code == 200 and "X-Degraded" not in fresh.headers
        assert db.calls == 1

        clock.advance(30.0)  # well past the 5 s fresh time, inside the stale window
        stale = await client.get("/items/9", headers=API_KEY)
        assert stale.status_code == 200
        assert stale.headers["X-Degraded"] == "serve_stale"
        assert stale.content == fresh.content
        assert db.calls == 1  # any copy beats a db call
        assert (await mode_active(client))["serve_stale"] == 1.0

        await switch(writer, client)  # off: a stale copy is reloaded from the db
        reloaded = await client.get("/items/9", headers=API_KEY)
        assert reloaded.status_code == 200 and "X-Degraded" not in reloaded.headers
    assert db.calls == 2


async def test_serve_stale_switched_at_runtime_keeps_items_up_while_the_db_fails(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target()
    clock = fake_clock_cache(target)
    async with connect(target) as client:
        primed = await client.get("/items/9", headers=API_KEY)
        assert primed.status_code == 200
        clock.advance(30.0)

        state = await writer.set_chaos("db", Chaos(error_rate=1.0))
        await eventually(lambda: applied(client, state.version), what="db chaos applied")
        failing = await client.get("/items/9", headers=API_KEY)
        assert failing.status_code == 503  # stale copy not used, the db fails
        assert failing.json()["dependency"] == "db"

        await switch(writer, client, SERVE_STALE)
        calls = target.service.dependencies["db"].calls
        stale = await client.get("/items/9", headers=API_KEY)
        assert stale.status_code == 200
        assert stale.headers["X-Degraded"] == "serve_stale"
        assert stale.content == primed.content
        assert target.service.dependencies["db"].calls == calls


# -- read_only ----------------------------------------------------------------------------------


async def assert_writes_refused(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/orders", json=ORDER, headers=API_KEY),
        await client.post("/signup", json=SIGNUP, headers=API_KEY),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"].isdigit()
        assert "read-only" in response.json()["detail"]
    assert (await client.get("/items/1", headers=API_KEY)).status_code == 200
    assert (await client.get("/feed", headers=API_KEY)).status_code == 200
    assert (await client.get("/ping")).status_code == 200


async def test_read_only_set_at_start(start_target: StartTarget, redis_client: redis.Redis) -> None:
    target = start_target(modes="read_only")
    async with connect(target) as client:
        await assert_writes_refused(client)
        assert (await mode_active(client))["read_only"] == 1.0
    assert redis_client.xlen(EMAIL_STREAM) == 0
    assert target.service.dependencies["payments"].calls == 0


async def test_read_only_switched_at_runtime(
    start_target: StartTarget, writer: ControlPlaneWriter, redis_client: redis.Redis
) -> None:
    target = start_target()
    async with connect(target) as client:
        assert (await client.post("/orders", json=ORDER, headers=API_KEY)).status_code == 201
        assert (await client.post("/signup", json=SIGNUP, headers=API_KEY)).status_code == 202

        await switch(writer, client, READ_ONLY)
        await assert_writes_refused(client)
        assert redis_client.xlen(EMAIL_STREAM) == 1

        await switch(writer, client)
        assert (await client.post("/orders", json=ORDER, headers=API_KEY)).status_code == 201
        assert (await client.post("/signup", json=SIGNUP, headers=API_KEY)).status_code == 202
    assert redis_client.xlen(EMAIL_STREAM) == 2
