"""Replicas announce themselves (issue 15): the expiry rule as a pure function, the
advertised URL's checks, and the announcements in a real Redis (heartbeats in Redis's
own time, a goodbye on a clean stop, pruning, Redis down)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from surgeguard.fleet import (
    REPLICAS_KEY,
    URLS_KEY,
    Announcer,
    Fleet,
    check_advertise_url,
    default_advertise_url,
    expired,
)
from surgeguard.protect import protect
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import ReplicaSettings, SettingsError
from tests.support.polling import eventually
from tests.support.processes import free_port

# -- the rule: pure ------------------------------------------------------------------------


def test_a_replica_is_expired_once_its_heartbeat_is_older_than_forget_after() -> None:
    heartbeats = {"a": 10_000.0, "b": 14_000.0, "c": 15_000.0}
    assert expired(heartbeats, 15_000, 5_000) == set()  # a is exactly 5 s old: kept
    assert expired(heartbeats, 15_001, 5_000) == {"a"}
    assert expired(heartbeats, 19_500, 5_000) == {"a", "b"}
    assert expired(heartbeats, 19_500, 60_000) == set()
    # A heartbeat from "the future" (another clock) is never expired by this reader.
    assert expired({"x": 99_000.0}, 15_000, 5_000) == set()


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.7:8000", "https://replica-3.shop.svc:8443/", "http://[::1]:8000"],
)
def test_an_advertised_url_is_a_base_url_others_reach(url: str) -> None:
    assert check_advertise_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://host:21", "http:// or https://"),
        ("10.0.0.7:8000", "http:// or https://"),
        ("http://:8000", "has no host"),
        ("http://0.0.0.0:8000", "not an address others reach"),
        ("http://host:99999", "bad port"),
        ("http://host:8000/?x=1", "no query"),
        ("", "http(s) URL"),
    ],
)
def test_a_bad_advertised_url_is_refused_naming_the_setting(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError) as caught:
        check_advertise_url(url)
    assert says in str(caught.value)
    monkeypatch.setenv("SURGEGUARD_ADVERTISE_URL", url)
    with pytest.raises(SettingsError) as error:
        ReplicaSettings.load()
    assert "SURGEGUARD_ADVERTISE_URL" in str(error.value) and says in str(error.value)


def test_the_default_url_is_host_and_port_listen_everywhere_as_loopback() -> None:
    assert default_advertise_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert default_advertise_url("10.1.2.3", 81) == "http://10.1.2.3:81"
    assert default_advertise_url("::1", 81) == "http://[::1]:81"
    chosen = ReplicaSettings.load(host="0.0.0.0").advertised(8000)
    assert chosen.advertise_url == "http://127.0.0.1:8000"
    given = ReplicaSettings.load(advertise_url="http://target1:8000")
    assert given.advertised(8000).advertise_url == "http://target1:8000"


# -- in a real Redis -------------------------------------------------------------------------


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


async def _redis_ms(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds * 1000 + micros / 1000


async def test_an_announcement_is_stamped_with_redis_time_and_a_stop_says_goodbye(
    client: aioredis.Redis,
) -> None:
    announcer = Announcer(client, "replica-a", "http://127.0.0.1:8000/", interval_s=0.05)
    announcer.start()
    try:
        await eventually(lambda: _count_at_least(announcer, 2), what="two announcements")
        assert await Fleet.read(client, 5000) == {"replica-a": "http://127.0.0.1:8000"}
        score = await client.zscore(REPLICAS_KEY, "replica-a")
        assert score is not None and abs(score - await _redis_ms(client)) < 2000
    finally:
        await announcer.stop()
    assert await Fleet.read(client, 5000) == {}
    assert await client.exists(REPLICAS_KEY, URLS_KEY) == 0


async def _count_at_least(announcer: Announcer, n: int) -> bool:
    return announcer.announced >= n


async def test_a_stop_leaves_another_replica_of_the_same_name_alone(
    client: aioredis.Redis,
) -> None:
    old = Announcer(client, "replica-a", "http://10.0.0.1:8000")
    assert await old.announce_once()
    await Fleet.announce(client, "replica-a", "http://10.0.0.2:8000")  # its successor
    old.start()
    await old.stop()
    assert await Fleet.read(client, 5000) == {"replica-a": "http://10.0.0.2:8000"}


async def test_the_reader_leaves_out_and_prunes_silent_replicas_by_redis_time(
    client: aioredis.Redis,
) -> None:
    now = await _redis_ms(client)
    await Fleet.announce(client, "fresh", "http://10.0.0.1:8000")
    await client.zadd(REPLICAS_KEY, {"silent": now - 10_000, "recent": now - 1_000})
    await client.hset(URLS_KEY, mapping={"silent": "http://10.0.0.2:8000"})
    live, pruned = await Fleet.sweep(client, 5000)
    assert live == {"fresh": "http://10.0.0.1:8000", "recent": ""}  # recent has no URL
    assert set(pruned) == {"silent"} and 9_000 < pruned["silent"] < 20_000
    assert await client.zscore(REPLICAS_KEY, "silent") is None
    assert await client.hget(URLS_KEY, "silent") is None
    # A longer forget_after keeps what a shorter one would prune.
    await client.zadd(REPLICAS_KEY, {"older": now - 8_000})
    assert "older" in await Fleet.read(client, 60_000)


async def test_redis_down_the_replica_serves_on_and_announces_once_it_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = EmbeddedRedis(data_dir=tmp_path / "redis", port=port)
    url = f"redis://:{server.password}@127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    announcer = Announcer(client, "replica-a", "http://127.0.0.1:8000", interval_s=0.05)
    try:
        assert not await announcer.announce_once()  # nobody listens yet: no exception
        assert announcer.last_error is not None
        announcer.start()  # it tries again every interval
        server.start()  # from this thread: the server dies with the thread that forks it
        await eventually(lambda: _count_at_least(announcer, 1), 10.0, "an announcement")
        assert announcer.last_error is None
        assert await Fleet.read(client, 5000) == {"replica-a": "http://127.0.0.1:8000"}
    finally:
        await announcer.stop()
        await client.aclose()
        server.stop()


async def _plain_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


async def test_a_protected_replica_announces_itself_only_with_an_advertised_url(
    redis_server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    settings = ReplicaSettings.load(advertise_url="http://10.0.0.9:8000")
    guarded = protect(
        _plain_app, routes={}, redis_url=redis_server.url, replica="shop-1", settings=settings
    )
    silent = protect(_plain_app, routes={}, redis_url=redis_server.url, replica="shop-2")
    await guarded.start()
    await silent.start()
    try:
        await eventually(
            lambda: _listed(client, {"shop-1": "http://10.0.0.9:8000"}), what="shop-1 announced"
        )
    finally:
        await silent.stop()
        await guarded.stop()
    assert await Fleet.read(client, 5000) == {}  # gone at once: the stop said goodbye


async def _listed(client: aioredis.Redis, expected: dict[str, str]) -> bool:
    return await Fleet.read(client, 5000) == expected
