"""Which replicas the controller tunes (issue 15): the static targets plus the replicas
announced in a real Redis, read again every tick, with a fake clock for the rule about
a list Redis lost; announcements that cannot be used are left out with a reason and
never break a tick."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from surgeguard import metric_names as names
from surgeguard.fleet import REPLICAS_KEY, URLS_KEY, Fleet
from surgeguard.protect import connect_redis
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller.loop import Controller
from surgeguard_controller.sensing.discovery import Discovery, sd_groups, vet
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.sources import DirectSource
from tests.support.clock import FakeClock
from tests.support.processes import free_port
from tests.support.servers import ServerThread
from tests.target_app.conftest import StartTarget


@pytest.fixture
async def client(
    redis_server: EmbeddedRedis, redis_client: object
) -> AsyncIterator[aioredis.Redis]:
    """An async client on the session's Redis, flushed first (``redis_client``)."""
    c = aioredis.Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


async def test_the_targets_are_the_static_ones_and_the_announced_ones(
    client: aioredis.Redis,
) -> None:
    found = Discovery(client, ["http://10.0.0.1:8000/", "http://10.0.0.2:8000"])
    assert await found.refresh() == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    await Fleet.announce(client, "b", "http://10.0.0.4:8000")
    await Fleet.announce(client, "a", "http://10.0.0.3:8000")
    await Fleet.announce(client, "static-too", "http://10.0.0.2:8000/")  # read once
    assert await found.refresh() == [
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://10.0.0.3:8000",
        "http://10.0.0.4:8000",
    ]
    assert found.announced == {"http://10.0.0.3:8000": ["a"], "http://10.0.0.4:8000": ["b"]}


async def test_a_replica_that_left_or_went_silent_is_gone_with_its_reason(
    client: aioredis.Redis,
) -> None:
    found = Discovery(client, forget_after_ms=5000)
    await Fleet.announce(client, "a", "http://10.0.0.3:8000")
    await Fleet.announce(client, "b", "http://10.0.0.4:8000")
    await Fleet.announce(client, "c", "http://10.0.0.5:8000")
    await found.refresh()
    await Fleet.leave(client, "a", "http://10.0.0.3:8000")  # a clean stop
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    await client.zadd(REPLICAS_KEY, {"b": now_ms - 9_000})  # silent for 9 s
    assert await found.refresh() == ["http://10.0.0.5:8000"]
    assert found.why_gone("http://10.0.0.3:8000") == "removed itself"
    # 9 s of silence plus however long this loaded machine took between the two calls
    why = found.why_gone("http://10.0.0.4:8000")
    assert why.startswith("not announced for ") and why.endswith(" s")
    assert 9.0 <= float(why.removeprefix("not announced for ").removesuffix(" s")) < 15.0
    await Fleet.announce(client, "c", "http://10.0.0.6:8000")  # restarted elsewhere
    assert await found.refresh() == ["http://10.0.0.6:8000"]
    assert found.why_gone("http://10.0.0.5:8000") == "announced again at http://10.0.0.6:8000"


async def test_a_list_redis_lost_is_waited_for_by_the_controllers_clock(
    client: aioredis.Redis, fake_clock: FakeClock
) -> None:
    found = Discovery(client, forget_after_ms=5000, clock=fake_clock)
    await Fleet.announce(client, "a", "http://10.0.0.3:8000")
    await found.refresh()
    await client.flushall()  # a Redis restarted without its data
    fake_clock.advance(4.9)
    assert await found.refresh() == ["http://10.0.0.3:8000"]  # kept: it will announce again
    await Fleet.announce(client, "a", "http://10.0.0.3:8000")
    fake_clock.advance(4.9)
    assert await found.refresh() == ["http://10.0.0.3:8000"]  # seen again: its clock restarts
    await client.flushall()
    fake_clock.advance(5.1)
    assert await found.refresh() == []
    assert found.why_gone("http://10.0.0.3:8000") == "no longer listed in Redis"


async def test_redis_unreachable_keeps_the_last_list() -> None:
    dead = connect_redis(f"redis://127.0.0.1:{free_port()}/0")  # fails fast
    try:
        found = Discovery(dead, ["http://10.0.0.1:8000"])
        found.replicas = {"a": "http://10.0.0.3:8000"}  # what the last read found
        assert await found.refresh() == ["http://10.0.0.1:8000", "http://10.0.0.3:8000"]
        assert found.error is not None and "Connection" in found.error
    finally:
        await dead.aclose()


async def test_announcements_that_cannot_be_read_are_ignored_with_a_reason(
    client: aioredis.Redis,
) -> None:
    found = Discovery(client)
    await Fleet.announce(client, "ok", "http://10.0.0.3:8000")
    await Fleet.announce(client, "ftp", "ftp://10.0.0.3:21")
    await Fleet.announce(client, "everywhere", "http://0.0.0.0:8000")
    await client.zadd(REPLICAS_KEY, {"no-url": 1e15, " ": 1e15})
    await client.hset(URLS_KEY, "orphan", "http://10.0.0.9:8000")  # no heartbeat: unseen
    assert await found.refresh() == ["http://10.0.0.3:8000"]
    assert set(found.ignored) == {"ftp", "everywhere", "no-url", " "}
    assert "http:// or https://" in found.ignored["ftp"]
    assert "not an address others reach" in found.ignored["everywhere"]
    assert found.ignored["no-url"] == "announced without a URL"


def _scrape(replica: str | None) -> Scrape:
    labels = frozenset({("replica", replica)}) if replica is not None else frozenset()
    return Scrape(1.0, {(names.REPLICA_INFO, labels): 1.0} if replica else {})


def test_a_target_that_answers_as_another_replica_or_none_is_stale_with_a_reason() -> None:
    errors: dict[str, str] = {}
    scrapes = {
        "http://static:1": _scrape("shop-1"),
        "http://dup:1": _scrape("shop-1"),  # shop-1 announced under a second URL
        "http://liar:1": _scrape("shop-2"),
        "http://nothing:1": _scrape(None),
        "http://honest:1": _scrape("shop-4"),
        "http://down:1": None,
    }
    announced = {
        "http://dup:1": ["shop-1"],
        "http://liar:1": ["shop-3"],
        "http://nothing:1": ["shop-5"],
        "http://honest:1": ["impostor", "shop-4"],  # two names, one URL: it is one of them
        "http://down:1": ["shop-6"],
    }
    vetted = vet(scrapes, announced, errors)
    assert set(vetted) == {*scrapes} - {"http://dup:1"}  # the static target reads shop-1
    assert vetted["http://liar:1"] is None and vetted["http://nothing:1"] is None
    assert vetted["http://honest:1"] is scrapes["http://honest:1"]
    assert errors == {
        "http://liar:1": "announced as replica shop-3, answers as shop-2",
        "http://nothing:1": f"announced as replica shop-5, answers as no {names.REPLICA_INFO}",
    }


def test_a_static_targets_twin_stays_out_while_the_static_target_is_down() -> None:
    """A static target and an announcement of the same replica under another URL
    (``--target http://0.0.0.0:8000``, announced as 127.0.0.1): read once, as static."""
    seen: set[str] = set()
    announced = {"http://127.0.0.1:8000": ["shop-1"]}
    both = {"http://0.0.0.0:8000": _scrape("shop-1"), "http://127.0.0.1:8000": _scrape("shop-1")}
    assert set(vet(both, announced, {}, seen)) == {"http://0.0.0.0:8000"}
    down = {**both, "http://0.0.0.0:8000": None}
    assert vet(down, announced, {}, seen) == {"http://0.0.0.0:8000": None}


def test_the_targets_as_prometheus_http_sd_groups() -> None:
    assert sd_groups([]) == [{"targets": [], "labels": {"job": "surgeguard-replicas"}}]
    assert sd_groups(["http://a:8000", "http://b:8000", "https://c:8443/shop"]) == [
        {"targets": ["a:8000", "b:8000"], "labels": {"job": "surgeguard-replicas"}},
        {
            "targets": ["c:8443"],
            "labels": {
                "job": "surgeguard-replicas",
                "__scheme__": "https",
                "__metrics_path__": "/shop/metrics",
            },
        },
    ]


# -- a tick over hostile announcements -------------------------------------------------------


async def _html(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with a page that is no metrics text."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"<html>{{ not metrics }}\x00</html>"})


@pytest.fixture
def html_server() -> Iterator[str]:
    with ServerThread(_html) as server:
        yield server.url


async def test_bogus_announcements_never_break_a_tick(
    client: aioredis.Redis, start_target: StartTarget, html_server: str
) -> None:
    """Written straight into Redis: a URL that is not http(s), one that points nowhere,
    a page that is no metrics, a real replica announced under another name. The ticks
    go on, the real replica is tuned, each bogus one is ignored or stale with a reason."""
    real = start_target(replica_id="shop-1")
    nowhere = f"http://127.0.0.1:{free_port()}"
    await Fleet.announce(client, "shop-1", real.url)
    await Fleet.announce(client, "ftp", "ftp://127.0.0.1:21")
    await Fleet.announce(client, "nowhere", nowhere)
    await Fleet.announce(client, "html", html_server)
    await Fleet.announce(client, "impostor", real.url + "/")  # shop-1 under another name
    await client.zadd(REPLICAS_KEY, {"no-url": 1e15})
    async with httpx.AsyncClient() as http:
        controller = Controller(client, DirectSource(http, Discovery(client)), tick_s=0.25)
        for _ in range(3):
            await controller.tick()
    assert controller.health.ok, controller.health.json()
    assert [v.replica for v in controller.replicas.values()] == ["shop-1"]
    assert controller.replicas[real.url].signals.stale is False
    found = controller.state_json()["discovery"]
    assert isinstance(found, dict)
    assert set(found["ignored"]) == {"ftp", "no-url"}
    errors = found["errors"]
    assert "ConnectError" in errors[nowhere], errors
    assert html_server in errors, errors
