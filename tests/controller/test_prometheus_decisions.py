"""The controller fed from Prometheus decides as it does when it scrapes directly:
two controllers, one per signal path, watch the same overloaded replica."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller.decide import ControllerConfig, Decision
from surgeguard_controller.loop import Controller
from surgeguard_controller.sensing.sources import DirectSource, PrometheusSource
from tests.support.processes import db_bound_env, free_port, surgeguard
from tests.support.prometheus import needs_prometheus, prometheus, scrape_config
from tests.support.rawhttp import closed_loop

pytestmark = [needs_prometheus, pytest.mark.slow]
KEYS = [f"client-{n}" for n in range(10)]


async def _until_prometheus_has(prom_url: str, instance: str) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as http:
        while True:
            r = await http.get(
                f"{prom_url}/api/v1/query", params={"query": f'up{{instance="{instance}"}}'}
            )
            if r.json()["data"]["result"]:
                return
            assert time.monotonic() < deadline, "prometheus never scraped the target"
            await asyncio.sleep(0.25)


async def _watch(
    target: str, prom_url: str, redis_url: str, seconds: float
) -> tuple[list[list[Decision]], list[list[Decision]]]:
    client = aioredis.Redis.from_url(redis_url)
    # Paused: both controllers decide on the same unchanged replica, neither acts.
    await ControlPlaneWriter(client).update(
        lambda s: s.__class__(**{**s.__dict__, "autopilot": False})
    )
    async with httpx.AsyncClient() as http:
        config = ControllerConfig()
        direct = Controller(client, DirectSource(http, [target]), config)
        via = Controller(client, PrometheusSource(http, prom_url, [target]), config)
        load = asyncio.create_task(
            closed_loop(
                target,
                150,
                seconds,
                lambda: f"/items/{random.randint(1, 100_000)}",
                headers=lambda n: {"X-Api-Key": KEYS[n % len(KEYS)]},
                pause_after_rejection_s=0.05,
            )
        )
        ticks_direct, ticks_via = [], []
        while not load.done():
            ticks_direct.append(await direct.tick())
            ticks_via.append(await via.tick())
            await asyncio.sleep(1.0)
        await load
    await client.aclose()
    return ticks_direct, ticks_via


def _limit_moves(ticks: list[list[Decision]]) -> list[Decision]:
    return [
        d for tick in ticks for d in tick if d.knob == "concurrency_limit" and d.action != "hold"
    ]


def test_prometheus_fed_decisions_match_direct_ones(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    env = db_bound_env(redis_server.url, KEYS)
    port = free_port()
    target = f"http://127.0.0.1:{port}"
    instance = f"127.0.0.1:{port}"
    with (
        surgeguard("target", "--port", str(port), env=env, health_url=f"{target}/healthz"),
        prometheus(scrape_config([instance]), tmp_path / "prometheus") as prom_url,
    ):
        asyncio.run(_until_prometheus_has(prom_url, instance))
        ticks_direct, ticks_via = asyncio.run(_watch(target, prom_url, redis_server.url, 8.0))

    direct, via = _limit_moves(ticks_direct), _limit_moves(ticks_via)
    assert direct and via, (ticks_direct, ticks_via)
    # The same verdict: an overloaded replica gets the same cuts, none applied.
    assert {d.action for d in direct} == {d.action for d in via} == {"cut"}
    assert abs(len(direct) - len(via)) <= 1
    assert all(not d.applied and "would have done" in d.reason for d in direct + via)
    assert {d.replica for d in direct} == {d.replica for d in via}
    for a, b in zip(direct, via, strict=False):
        assert a.old == b.old == 100
        assert abs(a.new - b.new) <= 0.15 * a.old, (a.reason, b.reason)
