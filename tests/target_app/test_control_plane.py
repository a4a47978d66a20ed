"""The control plane end to end: ControlPlaneWriter -> Redis -> running replicas, over
real HTTP. Fail static is shown with a Redis of the test's own that it stops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.controlplane import CONTROL_KEY, ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.declaration import DEMO
from tests.support.polling import eventually
from tests.target_app.conftest import API_KEY, StartTarget

POLL_MS = 200  # the fixture's control_poll_ms


async def readyz(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def arrives(
    client: httpx.AsyncClient, version: int, knobs: dict[str, int], timeout_s: float
) -> float:
    async def applied() -> bool:
        ready = await readyz(client)
        return bool(
            ready["control_plane"]["version"] == version
            and all(ready["knobs"][k] == v for k, v in knobs.items())
        )

    return await eventually(applied, timeout_s, f"version {version} with {knobs}")


async def gauge(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    [value] = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return value


# -- knobs reach the replicas ---------------------------------------------------------------------


async def test_a_knob_change_reaches_the_running_service_within_a_second(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target()
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        before = await readyz(client)
        assert before["knobs"]["concurrency_limit"] == DEMO.knob_specs["concurrency_limit"].default

        state = await writer.set_knobs({"concurrency_limit": 7, "bulkhead.db": 5})
        await arrives(
            client, state.version, {"concurrency_limit": 7, "bulkhead.db": 5}, timeout_s=1.0
        )
        assert await gauge(client, "surgeguard_concurrency_limit") == 7
        assert await gauge(client, "surgeguard_dependency_limit", dependency="db") == 5
        assert await gauge(client, "surgeguard_control_plane_version") == state.version
    assert target.service.limiter.limit == 7
    assert target.service.bulkheads["db"].limit == 5


async def test_a_lowered_limit_is_enforced_at_the_door(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    target = start_target(db_latency_ms=300, client_keys="demo-key,other-key")
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        state = await writer.set_knobs({"concurrency_limit": 1, "queue_limit": 0})
        await arrives(client, state.version, {"concurrency_limit": 1, "queue_limit": 0}, 1.0)
        first = asyncio.create_task(client.get("/items/21", headers=API_KEY))

        async def first_admitted() -> bool:
            return target.service.limiter.in_flight == 1

        await eventually(first_admitted, 2.0, "first request admitted")
        second = await client.get("/items/22", headers={"X-Api-Key": "other-key"})
        assert (await first).status_code == 200
    assert second.status_code == 429
    assert second.json()["reason"] == "queue_full"
    assert second.headers["Retry-After"].isdigit()


async def test_a_per_replica_override_applies_to_that_replica_only(
    start_target: StartTarget, writer: ControlPlaneWriter
) -> None:
    one, two = start_target(), start_target()
    assert one.service.replica != two.service.replica
    async with (
        httpx.AsyncClient(base_url=one.url, timeout=5.0) as c1,
        httpx.AsyncClient(base_url=two.url, timeout=5.0) as c2,
    ):
        assert (await readyz(c1))["replica"] == one.service.replica
        state = await writer.set_knobs({"concurrency_limit": 20})
        for client in (c1, c2):
            await arrives(client, state.version, {"concurrency_limit": 20}, 1.0)

        state = await writer.set_knobs(
            {"concurrency_limit": 5, "bulkhead.payments": 3}, replica=one.service.replica
        )
        await arrives(c1, state.version, {"concurrency_limit": 5, "bulkhead.payments": 3}, 1.0)
        # The other replica read the same version and kept the global value.
        await arrives(c2, state.version, {"concurrency_limit": 20}, 1.0)
        assert (await readyz(c2))["knobs"]["bulkhead.payments"] == DEMO.knob_specs[
            "bulkhead.payments"
        ].default
    assert one.service.limiter.limit == 5
    assert two.service.limiter.limit == 20


# -- a bad document is refused whole --------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ('{"version": 99, "knobs": {"concurrency_limit": 0}}', "concurrency_limit"),
        ('{"version": 99, "knobs": {"queue_limit": 5, "bulkhead.db": 0}}', "bulkhead.db"),
        ('{"version": 99, "knobs": {"queue_limit": 5}, "modes": ["Turbo!"]}', "Turbo!"),
        ('{"version": 99, "knobs": {"queue_limit": 5, "bulkhead.db": true}}', "bulkhead.db"),
        (
            '{"version": 99, "knobs": {"queue_limit": 5}, "replicas": {"r": {"knobs": {"x": 1}}}}',
            "x",
        ),
        ('{"version": 99, "knobs": {"queue_limit": 5', "invalid control document"),
    ],
    ids=[
        "out-of-range",
        "one-bad-of-two",
        "not-a-mode-name",
        "not-a-number",
        "not-a-knob-name",
        "not-json",
    ],
)
async def test_an_invalid_document_is_refused_whole(
    start_target: StartTarget,
    writer: ControlPlaneWriter,
    redis_client: redis.Redis,
    document: str,
    named: str,
) -> None:
    target = start_target()
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        state = await writer.set_knobs({"concurrency_limit": 9})
        await arrives(client, state.version, {"concurrency_limit": 9}, 1.0)
        good = await readyz(client)
        assert good["control_plane"]["last_error"] is None

        redis_client.set(CONTROL_KEY, document)  # by hand: no notice, found by polling

        async def refused() -> bool:
            return (await readyz(client))["control_plane"]["last_error"] is not None

        await eventually(refused, 2.0, "refusal reported")
        ready = await readyz(client)
    assert named in ready["control_plane"]["last_error"]
    assert ready["control_plane"]["version"] == state.version
    assert ready["knobs"] == good["knobs"]
    assert ready["modes"] == good["modes"] == []
    assert target.service.limiter.limit == 9
    assert target.service.limiter.queue_limit == DEMO.knob_specs["queue_limit"].default
    assert target.service.watcher.rejected_documents >= 1


async def test_names_this_replica_does_not_declare_are_left_out_and_the_rest_applies(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    """A rolling deploy: the controller tunes a dependency and a mode that only the new
    version declares. The old replicas keep following the knobs they do have instead
    of refusing the document (the controller's own writes are checked against what
    the replicas declare, so a typo cannot reach the plane through it)."""
    target = start_target()
    me = target.service.replica
    document = {
        "version": 7,
        "knobs": {"queue_limit": 5, "bulkhead.search": 3},
        "replicas": {me: {"knobs": {"concurrency_limit": 11, "bulkhead.search": 2}}},
        "modes": ["search_off", "read_only"],
    }
    redis_client.set(CONTROL_KEY, json.dumps(document))
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        await arrives(client, 7, {"queue_limit": 5, "concurrency_limit": 11}, 2.0)
        ready = await readyz(client)
    assert ready["control_plane"]["last_error"] is None
    assert "bulkhead.search" not in ready["knobs"]
    assert ready["modes"] == ["read_only"]  # the one it knows, at the door
    assert target.service.limiter.limit == 11 and target.service.limiter.queue_limit == 5


async def test_a_valid_document_after_a_refused_one_is_applied_and_clears_the_error(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    target = start_target()
    async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
        redis_client.set(CONTROL_KEY, '{"version": 99, "knobs": {"concurrency_limit": 0}}')

        async def refused() -> bool:
            return (await readyz(client))["control_plane"]["last_error"] is not None

        await eventually(refused, 2.0, "refusal reported")
        redis_client.set(CONTROL_KEY, '{"version": 100, "knobs": {"concurrency_limit": 12}}')
        await arrives(client, 100, {"concurrency_limit": 12}, 1.0)
        assert (await readyz(client))["control_plane"]["last_error"] is None
    assert target.service.limiter.limit == 12


# -- fail static ----------------------------------------------------------------------------------


async def test_fail_static_when_redis_goes_away_and_recovery_when_it_returns(
    start_target: StartTarget, tmp_path: Path
) -> None:
    data_dir = tmp_path / "control-redis"
    own = EmbeddedRedis(data_dir=data_dir)
    own.start()
    port = own.port
    try:
        target = start_target(redis_url=own.url)
        async with httpx.AsyncClient(base_url=target.url, timeout=5.0) as client:
            plane = aioredis.Redis.from_url(own.url)
            try:
                state = await ControlPlaneWriter(plane).set_knobs({"concurrency_limit": 11})
            finally:
                await plane.aclose()
            await arrives(client, state.version, {"concurrency_limit": 11}, 1.0)
            assert (await client.get("/items/5", headers=API_KEY)).status_code == 200

            own.stop()

            # Still serving, on the last knobs.
            assert (await client.get("/ping")).json() == {"pong": True}
            for item in (5, 6):
                response = await client.get(f"/items/{item}", headers=API_KEY)
                assert response.status_code == 200, response.text
                assert response.json()["id"] == item
            cold = await client.get("/items/7", headers=API_KEY)
            assert cold.status_code == 200
            assert "cache_unavailable" in cold.headers["X-Degraded"]

            async def stale() -> bool:
                plane_state = (await readyz(client))["control_plane"]
                return bool(plane_state["staleness_s"] > 2 * POLL_MS / 1000)

            await eventually(stale, 5.0, "staleness above two poll periods")
            ready = await readyz(client)
            assert ready["knobs"]["concurrency_limit"] == 11
            assert ready["control_plane"]["version"] == state.version
            assert "unreachable" in ready["control_plane"]["last_error"]
            assert (
                await gauge(client, "surgeguard_control_plane_staleness_seconds") > POLL_MS / 1000
            )
            assert target.service.limiter.limit == 11

            own = EmbeddedRedis(data_dir=data_dir, port=port)
            own.start()
            plane = aioredis.Redis.from_url(own.url)
            try:
                state = await ControlPlaneWriter(plane).set_knobs({"concurrency_limit": 13})
            finally:
                await plane.aclose()
            assert state.knobs["concurrency_limit"] == 13
            await arrives(client, state.version, {"concurrency_limit": 13}, 2.0)
            assert (await readyz(client))["control_plane"]["staleness_s"] < 1.0
            again = await client.get("/items/8", headers=API_KEY)
            assert again.status_code == 200 and "X-Degraded" not in again.headers
        assert target.service.limiter.limit == 13
    finally:
        own.stop()


async def test_the_writer_repairs_an_invalid_document_written_by_hand(
    redis_client: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Regression: an invalid stored document used to block every controller write."""
    redis_client.set(CONTROL_KEY, '{"version": 41, "knobs": {"concurrency_limit": 0}}')
    plane = aioredis.Redis.from_url(redis_server.url)
    try:
        state = await ControlPlaneWriter(plane).set_knobs({"queue_limit": 7})
    finally:
        await plane.aclose()
    assert state.version == 42
    assert dict(state.knobs) == {"queue_limit": 7}
