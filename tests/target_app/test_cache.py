"""ReadThroughCache against a real Redis server; freshness moved by a fake clock."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from surgeguard.bulkhead import Bulkhead
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.cache import CacheResult, ReadThroughCache
from tests.support.clock import FakeClock
from tests.support.processes import free_port

PREFIX = "surgeguard:cache:"


class Loader:
    """A stand-in db read: counts calls, can be held on an event or made to fail."""

    def __init__(self, value: bytes = b"v1") -> None:
        self.value = value
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self) -> bytes:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
async def aredis(redis_server: EmbeddedRedis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[redis.asyncio.Redis]:
    """A client for a loopback port nobody listens on (connections are refused)."""
    port = free_port()
    # No retries: the test is about the cache's fallback, not redis-py's backoff.
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield client
    finally:
        await client.aclose()


def make_cache(
    client: redis.asyncio.Redis,
    clock: FakeClock,
    *,
    bulkhead: Bulkhead | None = None,
    **kwargs: Any,
) -> ReadThroughCache:
    return ReadThroughCache(
        client, bulkhead or Bulkhead("cache", 100), clock=clock, rng=random.Random(7), **kwargs
    )


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate()`` holds (the timeout only guards a bug)."""
    async with asyncio.timeout(5):
        # Polling, not an Event: the conditions are counters inside the cache.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_miss_then_hits_load_once(aredis: redis.asyncio.Redis, fake_clock: FakeClock) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader()
    assert await cache.get("k", load) == CacheResult(b"v1", "db", False, True)
    assert await cache.get("k", load) == CacheResult(b"v1", "local", False, True)
    assert load.calls == 1
    assert (cache.misses, cache.loads, cache.hits_local) == (1, 1, 1)
    assert await aredis.exists(PREFIX + "k") == 1


async def test_local_copy_expires_then_redis_answers(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock, ttl_s=5.0, local_ttl_s=0.5)
    load = Loader()
    await cache.get("k", load)
    fake_clock.advance(0.4)
    assert (await cache.get("k", load)).source == "local"
    fake_clock.advance(0.2)  # past the local 0.5 s, well inside the fresh >= 4 s
    assert await cache.get("k", load) == CacheResult(b"v1", "cache", False, True)
    assert (await cache.get("k", load)).source == "local"  # refilled from Redis
    assert load.calls == 1
    assert cache.hits_remote == 1


async def test_another_replica_reads_the_shared_copy(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    writer, reader = make_cache(aredis, fake_clock), make_cache(aredis, fake_clock)
    await writer.get("k", Loader(b"shared"))
    other = Loader(b"other")
    assert await reader.get("k", other) == CacheResult(b"shared", "cache", False, True)
    assert other.calls == 0


@pytest.mark.parametrize("allow_stale", [True, False])
async def test_stale_copy(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock, allow_stale: bool
) -> None:
    cache = make_cache(aredis, fake_clock, ttl_s=5.0, ttl_jitter=0.2, stale_s=60.0)
    await cache.get("k", Loader(b"old"))
    fake_clock.advance(6.01)  # past the longest jittered fresh time, 5 * 1.2 s
    fresh = Loader(b"new")
    result = await cache.get("k", fresh, allow_stale=allow_stale)
    if allow_stale:
        assert result == CacheResult(b"old", "cache", True, True)
        assert (fresh.calls, cache.stale_served) == (0, 1)
    else:
        assert result == CacheResult(b"new", "db", False, True)
        assert fresh.calls == 1
        # The reload was written back: another replica now sees it fresh.
        other = make_cache(aredis, fake_clock)
        assert await other.get("k", Loader()) == CacheResult(b"new", "cache", False, True)


async def test_allow_stale_still_loads_a_missing_key(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader()
    assert (await cache.get("k", load, allow_stale=True)).source == "db"
    assert load.calls == 1


async def test_jittered_ttl_stays_within_bounds(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock, ttl_s=10.0, ttl_jitter=0.2, stale_s=60.0)
    keys = [f"k{i}" for i in range(20)]
    for key in keys:
        await cache.get(key, Loader())
    pttls = [await aredis.pttl(PREFIX + key) for key in keys]
    # Redis lifetime = fresh (10 s +/- 20 %) + 60 s stale; allow 1 s for the test's run.
    assert all(67_000 <= p <= 72_000 for p in pttls), pttls
    assert len(set(pttls)) > 10, "keys written together must not expire together"
    # Freshness (by the injected clock) honours the same bounds.
    fake_clock.advance(7.99)
    remote = make_cache(aredis, fake_clock)
    assert all([(await remote.get(k, Loader())).source == "cache" for k in keys])
    fake_clock.advance(4.02)
    stale = [await remote.get(k, Loader(), allow_stale=True) for k in keys]
    assert all(r.stale for r in stale)


async def test_single_flight_fifty_callers_one_load(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader(b"hot")
    load.gate = asyncio.Event()
    callers = [asyncio.create_task(cache.get("hot", load)) for _ in range(50)]
    await load.entered.wait()
    await wait_until(lambda: cache.misses == 50)
    load.gate.set()
    results = await asyncio.gather(*callers)
    assert load.calls == 1
    assert cache.loads == 1
    assert all(r == CacheResult(b"hot", "db", False, True) for r in results)
    assert (await cache.get("hot", load)).source == "local"


async def test_single_flight_shares_the_error_and_the_next_call_retries(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader()
    load.gate, load.error = asyncio.Event(), RuntimeError("db down")
    callers = [asyncio.create_task(cache.get("k", load)) for _ in range(10)]
    await load.entered.wait()
    await wait_until(lambda: cache.misses == 10)
    load.gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and str(o) == "db down" for o in outcomes)
    assert load.calls == 1
    load.gate, load.error = None, None
    assert (await cache.get("k", load)).source == "db"
    assert load.calls == 2


async def test_cancelled_first_caller_does_not_break_the_others(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader()
    load.gate = asyncio.Event()
    first = asyncio.create_task(cache.get("k", load))
    await load.entered.wait()
    others = [asyncio.create_task(cache.get("k", load)) for _ in range(5)]
    await wait_until(lambda: cache.misses == 6)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    load.gate.set()
    assert [r.value for r in await asyncio.gather(*others)] == [b"v1"] * 5
    assert load.calls == 1


async def test_cache_down_falls_back_to_load(
    dead_redis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(dead_redis, fake_clock, local_ttl_s=0)
    load = Loader()
    assert await cache.get("k", load) == CacheResult(b"v1", "db", False, False)
    assert await cache.get("k", load) == CacheResult(b"v1", "db", False, False)
    assert load.calls == 2
    assert cache.cache_errors == 2  # one per failed lookup; no write-back attempted
    assert await cache.invalidate("k") is False


async def test_cache_down_single_flight(
    dead_redis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(dead_redis, fake_clock)
    load = Loader()
    load.gate = asyncio.Event()
    callers = [asyncio.create_task(cache.get("k", load)) for _ in range(20)]
    await load.entered.wait()
    await wait_until(lambda: cache.misses == 20)
    load.gate.set()
    results = await asyncio.gather(*callers)
    assert {r.cache_available for r in results} == {False}
    assert load.calls == 1


async def test_bulkhead_full_falls_back_to_load(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    bulkhead = Bulkhead("cache", 1, max_wait_s=0)
    cache = make_cache(aredis, fake_clock, bulkhead=bulkhead)
    release = asyncio.Event()
    holder = asyncio.create_task(bulkhead.call(release.wait))
    await wait_until(lambda: bulkhead.in_flight == 1)
    load = Loader()
    assert await cache.get("k", load) == CacheResult(b"v1", "db", False, False)
    assert load.calls == 1
    assert cache.cache_errors == 1
    assert bulkhead.rejected_full == 1
    release.set()
    await holder
    # Once the slot frees up, Redis is used again.
    assert (await cache.get("k2", load)).cache_available is True


async def test_failing_latency_hook_is_a_miss_and_allow_stale_uses_local_copy(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    failing = False

    async def chaos() -> None:
        if failing:
            raise ConnectionError("chaos: cache unavailable")

    cache = make_cache(aredis, fake_clock, remote_latency=chaos)
    await cache.get("k", Loader(b"old"))
    failing = True
    fake_clock.advance(1.0)  # local copy expired
    # serve_stale: Redis is down but an expired in-process copy exists: no db call.
    fresh = Loader(b"new")
    assert await cache.get("k", fresh, allow_stale=True) == CacheResult(
        b"old", "local", True, False
    )
    assert fresh.calls == 0
    # Without serve_stale the db answers.
    assert await cache.get("k", fresh) == CacheResult(b"new", "db", False, False)
    assert fresh.calls == 1
    assert cache.cache_errors == 2


async def test_invalidate_drops_both_copies(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader(b"old")
    await cache.get("k", load)
    assert await cache.invalidate("k") is True
    assert await aredis.exists(PREFIX + "k") == 0
    load.value = b"new"
    assert await cache.get("k", load) == CacheResult(b"new", "db", False, True)
    assert load.calls == 2


async def test_invalidate_during_load_stores_nothing_old(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock)
    load = Loader(b"old")
    load.gate = asyncio.Event()
    before = asyncio.create_task(cache.get("k", load))
    await load.entered.wait()
    await cache.invalidate("k")
    load.gate.set()
    assert (await before).value == b"old"  # asked before the change: gets what it read
    assert await aredis.exists(PREFIX + "k") == 0
    load.value = b"new"
    assert (await cache.get("k", load)).value == b"new"


async def test_local_layer_is_lru_bounded(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock
) -> None:
    cache = make_cache(aredis, fake_clock, local_max_entries=2)
    for key in ("a", "b"):
        await cache.get(key, Loader())
    await cache.get("a", Loader())  # "a" is now the most recently used
    await cache.get("c", Loader())  # evicts "b"
    assert (await cache.get("a", Loader())).source == "local"
    assert (await cache.get("b", Loader())).source == "cache"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": 0.0}, "ttl_s must be > 0 seconds, got 0.0"),
        ({"ttl_jitter": 1.0}, "ttl_jitter must be in [0, 1), got 1.0"),
        ({"stale_s": -1.0}, "stale_s must be >= 0 seconds, got -1.0"),
        ({"local_max_entries": -1}, "local_max_entries must be >= 0, got -1"),
    ],
)
async def test_rejects_bad_settings(
    aredis: redis.asyncio.Redis, fake_clock: FakeClock, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_cache(aredis, fake_clock, **kwargs)
