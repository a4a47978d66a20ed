"""Which replicas the controller tunes: the static ``--target`` URLs and every replica
that announces itself in Redis (``surgeguard.fleet``), read again every tick.

A replica that announced is tuned from the tick after its first announcement; one
that removed itself (a clean stop) is gone at the next read, one that went silent
(killed, partitioned) once its heartbeat is older than ``forget_after_ms`` by Redis's
clock. An empty list after a non-empty one is also what a Redis that lost its data
shows: the replicas are then kept until ``forget_after_ms`` by the controller's own
clock (they announce again within an interval), so a Redis restart without
persistence does not make the controller forget the fleet. Redis unreachable: the
last list is kept (fail static).

An announcement that cannot be used (no URL, not an http(s) URL) is left out with its
reason (``ignored``); one whose URL answers as another replica, or as nothing that is a
replica, is read as stale with a reason (``vet``). Static targets stay as before: never
forgotten, stale while down.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard import metric_names as names
from surgeguard.fleet import Fleet, check_advertise_url
from surgeguard_controller.sensing.scrape import Scrape

log = logging.getLogger("controller")

FORGET_AFTER_MS = 5000  # a replica silent this long is forgotten
GONE_KEPT = 256  # departures remembered (for their reason), newest last
SD_JOB = "surgeguard-replicas"  # the job label of the http_sd target group


class TargetSet(Protocol):
    """The targets a source reads, as of the last ``refresh``."""

    @property
    def current(self) -> Sequence[str]: ...

    @property
    def announced(self) -> Mapping[str, Sequence[str]]:
        """Announced target URL -> the replica names announced at it (static ones
        absent; one name, unless an entry was written by hand)."""
        ...

    async def refresh(self) -> Sequence[str]: ...

    def why_gone(self, target: str) -> str: ...

    def json(self) -> dict[str, Any]: ...


def normalise(url: str) -> str:
    return url.strip().rstrip("/")


class StaticTargets:
    """A fixed list (the controller before discovery, and tests)."""

    def __init__(self, targets: Iterable[str]) -> None:
        self._targets = list(dict.fromkeys(normalise(t) for t in targets))

    @property
    def current(self) -> Sequence[str]:
        return self._targets

    @property
    def announced(self) -> Mapping[str, Sequence[str]]:
        return {}

    async def refresh(self) -> Sequence[str]:
        return self._targets

    def why_gone(self, target: str) -> str:
        return "no longer a target"

    def json(self) -> dict[str, Any]:
        return {"static": list(self._targets), "announced": {}, "ignored": {}, "error": None}


class Discovery:
    """The static targets plus the replicas announced in ``redis``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        static: Iterable[str] = (),
        *,
        forget_after_ms: float = FORGET_AFTER_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``forget_after_ms``: a replica whose heartbeat is older is forgotten, ms;
        ``clock``: monotonic seconds (only for a list Redis lost, see the module)."""
        if not 100 <= forget_after_ms <= 3_600_000:
            raise ValueError(f"forget_after_ms must be in [100, 3600000], got {forget_after_ms}")
        self.redis = redis
        self.static = list(dict.fromkeys(normalise(t) for t in static))
        self.forget_after_ms = forget_after_ms
        self._clock = clock
        self.replicas: dict[str, str] = {}  # announced replica -> its URL, being read
        self.ignored: dict[str, str] = {}  # announced replica -> why it is not read
        self.error: str | None = None  # why the last read of Redis failed
        self._seen: dict[str, float] = {}  # replica -> monotonic s it was last listed
        self._gone: OrderedDict[str, str] = OrderedDict()  # target URL -> why it left

    @property
    def current(self) -> Sequence[str]:
        """Static targets first, then the announced ones by replica name."""
        urls = [self.replicas[name] for name in sorted(self.replicas)]
        return list(dict.fromkeys([*self.static, *urls]))

    @property
    def announced(self) -> Mapping[str, Sequence[str]]:
        static = set(self.static)
        names: dict[str, list[str]] = {}
        for name, url in sorted(self.replicas.items()):
            if url not in static:
                names.setdefault(url, []).append(name)
        return names

    def why_gone(self, target: str) -> str:
        return self._gone.get(target, "no longer announced")

    async def refresh(self) -> Sequence[str]:
        """Read the announcements; returns ``current``."""
        try:
            live, silent = await Fleet.sweep(self.redis, self.forget_after_ms)
        except (RedisError, OSError) as exc:
            if self.error is None:
                log.warning("cannot read the announced replicas, keeping the last list: %s", exc)
            self.error = f"{type(exc).__name__}: {exc}"
            return self.current
        self.error = None
        self._follow(live, silent)
        return self.current

    def _follow(self, live: Mapping[str, str], silent: Mapping[str, float]) -> None:
        """Take one read: ``live`` replica -> URL, ``silent`` replica -> ms since the
        heartbeat of each one the read pruned."""
        now = self._clock()
        usable = {n: normalise(u) for n, u in live.items() if unusable(n, u) is None}
        ignored = {n: why for n, u in live.items() if (why := unusable(n, u)) is not None}
        for name in set(ignored) - set(self.ignored):
            log.warning("announced replica %s ignored: %s", name, ignored[name])
        self.ignored = ignored
        if not live and not silent and self.replicas:
            # Redis lost the list (or every replica stopped at once): keep them a while.
            usable = {
                name: url
                for name, url in self.replicas.items()
                if (now - self._seen.get(name, now)) * 1000 <= self.forget_after_ms
            }
        else:
            self._seen.update(dict.fromkeys(usable, now))
        for name, url in self.replicas.items():
            if usable.get(name) != url:
                self._gone[url] = _why(name, usable, ignored, silent, listed=bool(live))
                self._gone.move_to_end(url)
        for name, url in usable.items():
            self._gone.pop(url, None)
            if self.replicas.get(name) != url:
                log.info("replica %s announced at %s: tuned from the next tick", name, url)
        while len(self._gone) > GONE_KEPT:
            self._gone.popitem(last=False)
        self._seen = {name: at for name, at in self._seen.items() if name in usable}
        self.replicas = usable

    def json(self) -> dict[str, Any]:
        """What ``GET /state`` says about discovery."""
        return {
            "static": list(self.static),
            "announced": dict(sorted(self.replicas.items())),
            "ignored": dict(sorted(self.ignored.items())),
            "error": self.error,
            "forget_after_ms": self.forget_after_ms,
        }


def _why(
    name: str,
    usable: Mapping[str, str],
    ignored: Mapping[str, str],
    silent: Mapping[str, float],
    *,
    listed: bool,
) -> str:
    """Why an announced replica is no longer read."""
    if name in silent:
        return f"not announced for {silent[name] / 1000:.1f} s"
    if name in usable:
        return f"announced again at {usable[name]}"
    if name in ignored:
        return ignored[name]
    return "removed itself" if listed else "no longer listed in Redis"


def unusable(name: str, url: str) -> str | None:
    """Why an announcement cannot be read (None when it can)."""
    if not name.strip():
        return "an empty replica name"
    if not url:
        return "announced without a URL"
    try:
        check_advertise_url(url)
    except ValueError as exc:
        return f"its URL {url[:80]!r} {exc}"
    return None


def vet(
    scrapes: Mapping[str, Scrape | None],
    announced: Mapping[str, Sequence[str]],
    errors: dict[str, str],
    static_seen: set[str] | None = None,
) -> dict[str, Scrape | None]:
    """The reads of announced targets checked against what they announced: one that
    answers as another replica, or as no replica at all, is read as stale (None) with
    its reason in ``errors``; one that is a static target's replica under another URL
    is left out (the static target reads it). ``static_seen``: the names static
    targets answered as so far, kept across reads (so a static target down for a tick
    does not let its announced twin in), updated here."""

    def name_of(scrape: Scrape) -> set[str]:
        return scrape.label_values(names.REPLICA_INFO, "replica")

    static_names = {
        name
        for target, scrape in scrapes.items()
        if target not in announced and scrape is not None
        for name in name_of(scrape)
    }
    if static_seen is not None:
        static_seen |= static_names
        static_names = static_seen
    vetted: dict[str, Scrape | None] = {}
    for target, scrape in scrapes.items():
        expected = announced.get(target, ())
        if static_names.intersection(expected):
            continue
        if expected and scrape is not None:
            found = name_of(scrape)
            if len(found) != 1 or not found <= set(expected):
                said = ", ".join(sorted(found)) or f"no {names.REPLICA_INFO}"
                errors[target] = f"announced as replica {' or '.join(expected)}, answers as {said}"
                scrape = None
        vetted[target] = scrape
    return vetted


def sd_groups(targets: Sequence[str]) -> list[dict[str, Any]]:
    """Prometheus http_sd target groups of ``targets`` (base URLs): ``host:port`` per
    group of scheme and path (``__scheme__``/``__metrics_path__`` where not the default)."""
    from urllib.parse import urlsplit

    groups: dict[tuple[str, str], list[str]] = {}
    for url in targets:
        parts = urlsplit(url)
        groups.setdefault((parts.scheme, parts.path.rstrip("/")), []).append(parts.netloc)
    if not groups:
        return [{"targets": [], "labels": {"job": SD_JOB}}]
    answer = []
    for (scheme, path), hosts in groups.items():
        labels = {"job": SD_JOB}
        if scheme != "http":
            labels["__scheme__"] = scheme
        if path:
            labels["__metrics_path__"] = f"{path}/metrics"
        answer.append({"targets": hosts, "labels": labels})
    return answer
