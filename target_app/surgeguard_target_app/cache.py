"""A read-through cache: a small in-process layer in front of Redis, in front of the db.

Redis is reached only through the cache's own bulkhead, so a slow or dead cache holds
at most ``bulkhead.limit`` requests; when it cannot answer, a read becomes a miss and
goes to ``load`` instead of failing. Concurrent misses for one key share one lookup
and one ``load`` (single-flight), so a hot key that expires does not stampede the db.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import redis.asyncio

from surgeguard.bulkhead import Bulkhead

T = TypeVar("T")

# Each Redis value is an 8-byte big-endian float, the wall-clock "fresh until" time in
# seconds, then the payload: one GET returns both, one SET writes both atomically.
_HEADER = struct.Struct("!d")


@dataclass(frozen=True)
class CacheResult:
    """``source``: which layer answered; ``stale``: past its fresh time (served only
    with ``allow_stale``); ``cache_available``: Redis answered the lookup."""

    value: bytes
    source: Literal["local", "cache", "db"]
    stale: bool
    cache_available: bool


@dataclass(frozen=True)
class _Entry:
    value: bytes
    fresh_until: float  # clock time, seconds


@dataclass(frozen=True)
class _LocalEntry:
    value: bytes
    expires_at: float  # clock time, seconds; kept past it as a last resort, see get()


class ReadThroughCache:
    """Counters (plain ints, for tests and metrics): ``hits_local``, ``hits_remote``,
    ``stale_served``, ``misses`` (callers that needed the db), ``loads`` (actual
    ``load()`` calls), ``cache_errors`` (failed or rejected Redis operations)."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        bulkhead: Bulkhead,
        *,
        ttl_s: float = 5.0,
        ttl_jitter: float = 0.2,
        stale_s: float = 60.0,
        local_ttl_s: float = 0.5,
        local_max_entries: int = 10_000,
        remote_latency: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        prefix: str = "surgeguard:cache:",
    ) -> None:
        """``ttl_s``: fresh time, seconds, jittered uniformly by ``± ttl_jitter`` (0..1,
        a share of ``ttl_s``); ``stale_s``: how long past that Redis keeps a stale copy,
        seconds; ``local_ttl_s``: life of an in-process copy, seconds (0 turns the local
        layer off); ``clock``: wall clock in seconds, so replicas agree on freshness.
        ``redis`` must return bytes (``decode_responses=False``, the default)."""
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
        if not 0 <= ttl_jitter < 1:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {ttl_jitter}")
        if stale_s < 0:
            raise ValueError(f"stale_s must be >= 0 seconds, got {stale_s}")
        if local_ttl_s < 0:
            raise ValueError(f"local_ttl_s must be >= 0 seconds, got {local_ttl_s}")
        if local_max_entries < 0:
            raise ValueError(f"local_max_entries must be >= 0, got {local_max_entries}")
        self._redis = redis
        self._bulkhead = bulkhead
        self._ttl_s, self._ttl_jitter, self._stale_s = ttl_s, ttl_jitter, stale_s
        self._local_ttl_s, self._local_max = local_ttl_s, local_max_entries
        self._remote_latency = remote_latency
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._prefix = prefix
        self._local: OrderedDict[str, _LocalEntry] = OrderedDict()  # LRU order, oldest first
        # In-progress work per key, shared by every caller that arrives meanwhile.
        self._lookups: dict[str, asyncio.Task[tuple[_Entry | None, bool]]] = {}
        self._loads: dict[str, asyncio.Task[bytes]] = {}
        self.hits_local = self.hits_remote = self.stale_served = 0
        self.misses = self.loads = self.cache_errors = 0

    async def get(
        self, key: str, load: Callable[[], Awaitable[bytes]], *, allow_stale: bool = False
    ) -> CacheResult:
        """Local copy, else Redis, else ``load()`` (then stored). With ``allow_stale``
        any copy is served rather than calling ``load``. Errors of ``load`` propagate
        to every caller waiting on it; errors of the cache never do."""
        local = self._local.get(key)
        if local is not None and self._clock() < local.expires_at:
            self._local.move_to_end(key)
            self.hits_local += 1
            return CacheResult(local.value, "local", False, True)
        entry, available = await self._join(self._lookups, key, partial(self._lookup, key))
        if entry is not None:
            if self._clock() < entry.fresh_until:
                self.hits_remote += 1
                return CacheResult(entry.value, "cache", False, True)
            if allow_stale:
                self.stale_served += 1
                return CacheResult(entry.value, "cache", True, True)
        elif not available and allow_stale:
            # Redis is down: an expired in-process copy beats adding load to the db.
            local = self._local.get(key)
            if local is not None:
                self.stale_served += 1
                return CacheResult(local.value, "local", True, False)
        self.misses += 1
        # No write-back when Redis just failed us: a second failure would only add
        # its latency (up to the bulkhead timeout) to a read that already paid once.
        value = await self._join(self._loads, key, partial(self._load, key, load, available))
        return CacheResult(value, "db", False, available)

    async def invalidate(self, key: str) -> bool:
        """Drop the local and the Redis copy. Returns False when Redis could not be
        reached (its copy then lives until it expires, at most ``ttl_s * (1 +
        ttl_jitter) + stale_s`` seconds)."""
        self._local.pop(key, None)
        # Detach work in flight: it may have read the old value, so it must not store
        # it (see the checks in _lookup/_load); callers after this start afresh.
        self._lookups.pop(key, None)
        self._loads.pop(key, None)
        try:
            await self._remote(partial(self._redis.delete, self._prefix + key))
        except Exception:
            self.cache_errors += 1
            return False
        return True

    async def _join(
        self,
        flights: dict[str, asyncio.Task[T]],
        key: str,
        start: Callable[[], Coroutine[Any, Any, T]],
    ) -> T:
        task = flights.get(key)
        if task is None:
            # A task, not the first caller's coroutine: if that caller is cancelled
            # the work goes on for everyone else waiting on it.
            task = asyncio.create_task(start())
            flights[key] = task
            task.add_done_callback(partial(self._landed, flights, key))
        return await asyncio.shield(task)

    @staticmethod
    def _landed(flights: dict[str, asyncio.Task[T]], key: str, task: asyncio.Task[T]) -> None:
        if flights.get(key) is task:
            del flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" log if every waiter left

    async def _lookup(self, key: str) -> tuple[_Entry | None, bool]:
        """(entry or None, whether Redis answered)."""
        try:
            raw = await self._remote(partial(self._redis.get, self._prefix + key))
            entry = _decode(raw) if raw is not None else None
        except Exception:
            # Anything from the cache path (RedisError, OSError, a rejected bulkhead,
            # the chaos hook, a corrupt entry) is a miss, never a failed read.
            self.cache_errors += 1
            return None, False
        if entry is not None and self._lookups.get(key) is asyncio.current_task():
            self._local_put(key, entry.value, entry.fresh_until)
        return entry, True

    async def _load(
        self, key: str, load: Callable[[], Awaitable[bytes]], write_back: bool
    ) -> bytes:
        self.loads += 1
        value = await load()
        if self._loads.get(key) is not asyncio.current_task():
            return value  # invalidated meanwhile: hand it to its callers, store nothing
        ttl = self._ttl_s * self._rng.uniform(1 - self._ttl_jitter, 1 + self._ttl_jitter)
        fresh_until = self._clock() + ttl
        self._local_put(key, value, fresh_until)
        if write_back:
            # Awaited inside the flight so that no caller misses Redis and loads again
            # in the gap between load() returning and the value landing there.
            payload = _HEADER.pack(fresh_until) + value
            px = max(1, round((ttl + self._stale_s) * 1000))
            try:
                await self._remote(partial(self._redis.set, self._prefix + key, payload, px=px))
            except Exception:
                self.cache_errors += 1  # best effort: the read already has its value
        return value

    async def _remote(self, op: Callable[[], Awaitable[T]]) -> T:
        async def guarded() -> T:
            if self._remote_latency is not None:
                await self._remote_latency()
            return await op()

        return await self._bulkhead.call(guarded)

    def _local_put(self, key: str, value: bytes, fresh_until: float) -> None:
        if self._local_ttl_s == 0 or self._local_max == 0:
            return
        # Never outlive the fresh time: a local hit is always reported as fresh.
        expires_at = min(self._clock() + self._local_ttl_s, fresh_until)
        self._local[key] = _LocalEntry(value, expires_at)
        self._local.move_to_end(key)
        while len(self._local) > self._local_max:
            self._local.popitem(last=False)


def _decode(raw: bytes | str) -> _Entry:
    if not isinstance(raw, bytes):
        raise TypeError("the cache's Redis client must use decode_responses=False")
    (fresh_until,) = _HEADER.unpack_from(raw)  # struct.error if shorter than the header
    return _Entry(raw[_HEADER.size :], fresh_until)
