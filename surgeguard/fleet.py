"""Replicas that come and go: each one announces itself in Redis, the controller reads
who is there.

A replica with an advertised URL (``SURGEGUARD_ADVERTISE_URL``, the base the
controller scrapes ``/metrics`` under) sets, every announce interval, its heartbeat in
the sorted set ``surgeguard:replicas`` (replica name -> Redis's own ``TIME`` in ms,
taken inside a Lua script, so the clocks of the machines never matter) and its URL in
the hash ``surgeguard:replicas:urls``. On a clean stop it removes both (the controller
forgets it at once); a replica that dies without a word is left out once its
heartbeat is older than the reader's ``forget_after_ms``, and pruned.

Redis down: the replica keeps serving and tries again at the next interval (fail
static, like the control plane's watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from surgeguard.aio import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("surgeguard.fleet")

REPLICAS_KEY = "surgeguard:replicas"  # ZSET replica -> last heartbeat, ms of Redis TIME
URLS_KEY = "surgeguard:replicas:urls"  # HASH replica -> advertised base URL
URL_MAX = 2048  # characters: a URL longer than this is not an address

# KEYS: replicas, urls; ARGV: replica, url. Returns the heartbeat (ms of Redis TIME).
_ANNOUNCE = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return ms
"""

# KEYS: replicas, urls; ARGV: replica, url. Leaves only when the URL is still ours (a
# replica of the same name started elsewhere must not be removed by this one's stop).
_LEAVE = """
local url = redis.call('HGET', KEYS[2], ARGV[1])
if url == false or url == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: replicas, urls. Returns {now_ms, name1, score1, name2, score2, ...} and the
# URLs in the same order as a second list (false where none).
_READ = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local urls = {}
for i = 1, #live, 2 do
  urls[#urls + 1] = redis.call('HGET', KEYS[2], live[i])
end
return {ms, live, urls}
"""

# KEYS: replicas, urls; ARGV: cutoff ms, names... Removes each name whose heartbeat is
# still older than the cutoff (one that announced again since the read stays).
_PRUNE = """
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score == false or tonumber(score) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


def check_advertise_url(url: str) -> str:
    """``url`` without a trailing slash, or ``ValueError`` saying what is wrong: an
    http(s) URL with a host others can reach (not 0.0.0.0), no query or fragment."""
    text = url.strip()
    if not text or len(text) > URL_MAX:
        raise ValueError(f"must be an http(s) URL of at most {URL_MAX} characters")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {text[:80]!r}")
    try:
        host, _ = parts.hostname, parts.port  # the port raises when not a number in range
    except ValueError as exc:  # a port that is no number or out of range
        raise ValueError(f"bad port in {text[:80]!r}: {exc}") from None
    if not host:
        raise ValueError(f"has no host: {text[:80]!r}")
    if host in ("0.0.0.0", "::"):
        raise ValueError(
            f"{host} is where a server listens, not an address others reach: "
            "give this machine's name or address"
        )
    if parts.query or parts.fragment or any(c.isspace() for c in text):
        raise ValueError(f"must be a base URL (no query, fragment or spaces), got {text[:80]!r}")
    return text.rstrip("/")


def default_advertise_url(host: str, port: int) -> str:
    """``http://host:port``, a listen-everywhere host as loopback: right on one machine
    only (compose and Kubernetes set ``SURGEGUARD_ADVERTISE_URL`` to a name others
    resolve)."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"


@dataclass(frozen=True)
class Roster:
    """One read of the announcements: ``now_ms`` (Redis TIME), each replica's last
    heartbeat (ms) and advertised URL ("" when it has none); ``raw``: each name as
    stored (bytes), to remove exactly that member."""

    now_ms: int
    heartbeats: Mapping[str, float]
    urls: Mapping[str, str]
    raw: Mapping[str, bytes | str]


def expired(heartbeats: Mapping[str, float], now_ms: float, forget_after_ms: float) -> set[str]:
    """Replicas whose last heartbeat is more than ``forget_after_ms`` before
    ``now_ms`` (all in ms of one clock, Redis's)."""
    return {name for name, at in heartbeats.items() if now_ms - at > forget_after_ms}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Fleet:
    """Reads and writes of the announcements (``REPLICAS_KEY``, ``URLS_KEY``)."""

    @staticmethod
    async def announce(redis: aioredis.Redis, replica: str, url: str) -> int:
        """Set this replica's heartbeat and URL; returns the heartbeat, ms of Redis TIME."""
        ms = await redis.eval(_ANNOUNCE, 2, REPLICAS_KEY, URLS_KEY, replica, url)
        return int(ms)

    @staticmethod
    async def leave(redis: aioredis.Redis, replica: str, url: str) -> bool:
        """Remove this replica (when the URL announced under its name is its own)."""
        removed = await redis.eval(_LEAVE, 2, REPLICAS_KEY, URLS_KEY, replica, url)
        return bool(removed)

    @staticmethod
    async def roster(redis: aioredis.Redis) -> Roster:
        """Every announcement as stored, with Redis's time of the read."""
        now, live, urls = await redis.eval(_READ, 2, REPLICAS_KEY, URLS_KEY)
        names = [_text(n) for n in live[0::2]]
        raw = dict(zip(names, live[0::2], strict=True))
        heartbeats = {n: float(s) for n, s in zip(names, live[1::2], strict=True)}
        # Lua's false comes back as None.
        found = {n: _text(u) if u is not None else "" for n, u in zip(names, urls, strict=True)}
        return Roster(int(now), heartbeats, found, raw)

    @staticmethod
    async def read(redis: aioredis.Redis, forget_after_ms: float) -> dict[str, str]:
        """``{replica: url}`` of every replica that announced within the last
        ``forget_after_ms`` (by Redis TIME); older entries are left out and pruned. A
        replica announced without a URL maps to ""."""
        live, _ = await Fleet.sweep(redis, forget_after_ms)
        return live

    @staticmethod
    async def sweep(
        redis: aioredis.Redis, forget_after_ms: float
    ) -> tuple[dict[str, str], dict[str, float]]:
        """``read``, plus the replicas it pruned: ``{replica: ms since its last
        heartbeat}``."""
        roster = await Fleet.roster(redis)
        gone = expired(roster.heartbeats, roster.now_ms, forget_after_ms)
        if gone:
            cutoff = roster.now_ms - forget_after_ms
            names = [roster.raw[n] for n in sorted(gone)]
            await redis.eval(_PRUNE, 2, REPLICAS_KEY, URLS_KEY, cutoff, *names)
        live = {name: url for name, url in roster.urls.items() if name not in gone}
        return live, {name: roster.now_ms - roster.heartbeats[name] for name in gone}


class Announcer:
    """Announces one replica every ``interval_s`` seconds until stopped; a stop says
    goodbye (removes it). Redis errors are logged once and tried again."""

    def __init__(
        self, redis: aioredis.Redis, replica: str, url: str, *, interval_s: float = 1.0
    ) -> None:
        if not 0.01 <= interval_s <= 60:
            raise ValueError(f"interval_s must be in [0.01, 60] seconds, got {interval_s}")
        self.redis = redis
        self.replica = replica
        self.url = check_advertise_url(url)
        self.interval_s = interval_s
        self.announced = 0  # successful announcements
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="surgeguard-announce")

    async def stop(self) -> None:
        """Stop announcing and remove this replica (best effort: Redis may be down)."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task)
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await Fleet.leave(self.redis, self.replica, self.url)
            log.info("replica %s no longer announced", self.replica)

    async def announce_once(self) -> bool:
        """One announcement; False (and the error kept) when Redis could not take it."""
        from redis.exceptions import RedisError

        try:
            await Fleet.announce(self.redis, self.replica, self.url)
        except (RedisError, OSError) as exc:
            if self.last_error is None:
                log.warning(
                    "replica %s cannot announce itself (Redis: %s); serving on, trying again",
                    self.replica,
                    exc,
                )
            self.last_error = str(exc) or type(exc).__name__
            return False
        if self.last_error is not None:
            log.info("replica %s announces itself again", self.replica)
        elif self.announced == 0:
            log.info("replica %s announced at %s", self.replica, self.url)
        self.last_error = None
        self.announced += 1
        return True

    async def _run(self) -> None:
        while True:
            await self.announce_once()
            await asyncio.sleep(self.interval_s)
