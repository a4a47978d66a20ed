"""The db's budget divided among real replicas (issue 15): a real Redis, a real
controller (0.3 s ticks) finding the replicas as they announce themselves, and two
then three real demo replicas started with ``SURGEGUARD_BUDGETS=db:12``.

Under a load that keeps more calls waiting for the db than the budget allows, every
replica's enforced ``bulkhead.db`` (its ``surgeguard_dependency_limit``) is sampled
about every tick, all replicas at once, and their sum never exceeds 12. The shares
follow the load from one replica to another; a third replica started mid-run starts
at the minimum and gets a share taken from the others'; stopped, it gives it back.

The in-process simulated db serves each replica (capacity 64 each, far above the
budget): without the budget every replica's limit would grow past 12 on its own. The
SLO is set far above the db's latency so the door lets the load wait for the db (the
demand the budget is divided by) instead of the concurrency limit cutting it off."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import until_truthy
from tests.support.processes import clean_env, free_port, surgeguard
from tests.support.rawhttp import Connection

BUDGET = 12
KEYS = [f"client-{n}" for n in range(8)]
LIMIT = 'surgeguard_dependency_limit{dependency="db"}'


@dataclass
class Replica:
    name: str
    url: str  # serving port (the controller scrapes it; the load goes there)
    metrics: str  # its health port's /metrics (a thread of its own: answers at once)


@dataclass
class Watch:
    """The load on each replica (closed-loop workers) and every sample of the limits."""

    workers: dict[str, int] = field(default_factory=dict)  # replica url -> workers
    sampled: dict[str, Replica] = field(default_factory=dict)  # name -> replica to sample
    samples: list[dict[str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _env(redis_url: str) -> dict[str, str]:
    return clean_env(
        SURGEGUARD_REDIS_URL=redis_url,
        SURGEGUARD_BUDGETS=f"db:{BUDGET}",
        SURGEGUARD_PENALTY_BOX="false",
        SURGEGUARD_DB_CAPACITY="64",
        SURGEGUARD_DB_LATENCY_MS="100",
        SURGEGUARD_SLO_P99_MS="5000",
        SURGEGUARD_BULKHEAD_MAX_WAIT_MS="1500",
        SURGEGUARD_DEPENDENCY_TIMEOUT_MS="5000",
        SURGEGUARD_CONTROL_POLL_MS="100",
        SURGEGUARD_ANNOUNCE_INTERVAL_MS="300",
        SURGEGUARD_CONTROLLER_FORGET_AFTER_MS="1500",
        SURGEGUARD_CLIENT_KEYS=",".join(KEYS),
    )


@contextmanager
def _replica(name: str, env: dict[str, str], port: int | None = None) -> Iterator[Replica]:
    port, health = port or free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    args = ("target", "--port", str(port), "--replica-id", name, "--health-port", str(health))
    with surgeguard(*args, env=env, health_url=f"{url}/healthz"):
        yield Replica(name, url, f"http://127.0.0.1:{health}/metrics")


def _limit(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(LIMIT):
            return int(float(line.split()[-1]))
    return None


async def _drive(watch: Watch) -> None:
    """Closed-loop readers of random items (a cache miss is a db call) on each replica,
    as many as ``watch.workers`` says now, and a sample of every limit every 0.15 s."""

    async def worker(url: str, index: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        connection = Connection(host, int(port), {"X-Api-Key": KEYS[index % len(KEYS)]})
        while not watch.stop.is_set():
            if index >= watch.workers.get(url, 0):
                await connection.close()
                await asyncio.sleep(0.05)
                continue
            try:
                status, _ = await connection.get(f"/items/{random.randint(1, 100_000)}")
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
                await connection.close()
                await asyncio.sleep(0.05)
                continue
            if status in (429, 503):
                await asyncio.sleep(0.05)
        await connection.close()

    async def sampler(http: httpx.AsyncClient) -> None:
        while not watch.stop.is_set():
            replicas = list(watch.sampled.values())
            answers = await asyncio.gather(
                *(http.get(r.metrics) for r in replicas), return_exceptions=True
            )
            limits = {
                r.name: _limit(a.text)
                for r, a in zip(replicas, answers, strict=True)
                if isinstance(a, httpx.Response) and a.status_code == 200
            }
            if len(limits) == len(replicas) and None not in limits.values():
                watch.samples.append({n: v for n, v in limits.items() if v is not None})
            await asyncio.sleep(0.15)

    urls = list(watch.workers)
    async with httpx.AsyncClient(timeout=2.0) as http:
        await asyncio.gather(sampler(http), *(worker(url, n) for url in urls for n in range(24)))


def _budget(controller: str) -> dict[str, Any]:
    state = httpx.get(f"{controller}/api/v1/state", timeout=5).json()
    budget: dict[str, Any] = state.get("budgets", {}).get("db", {})
    return budget


def _shares(controller: str, *names: str) -> dict[str, int] | None:
    """The published shares, once every one of ``names`` has one."""
    shares: dict[str, int] = _budget(controller).get("shares", {})
    return shares if all(n in shares for n in names) else None


@pytest.mark.slow
def test_the_db_budget_is_divided_and_never_exceeded(
    redis_server: EmbeddedRedis, redis_client: object
) -> None:
    env = _env(redis_server.url)
    watch = Watch()
    with ExitStack() as stack:
        a = stack.enter_context(_replica("replica-a", env))
        b = stack.enter_context(_replica("replica-b", env))
        cport = free_port()
        controller = f"http://127.0.0.1:{cport}"
        stack.enter_context(
            surgeguard(
                "controller",
                "--port",
                str(cport),
                "--tick-ms",
                "300",
                env=env,
                health_url=f"{controller}/healthz",
            )
        )
        c_port = free_port()
        c_url = f"http://127.0.0.1:{c_port}"
        watch.workers = {a.url: 24, b.url: 1, c_url: 0}
        watch.sampled = {a.name: a, b.name: b}
        driver = threading.Thread(target=asyncio.run, args=(_drive(watch),), daemon=True)
        driver.start()
        stack.callback(driver.join, 10)
        stack.callback(watch.stop.set)

        # a has the load: it gets most of the budget (11 of 12 are handed out: one
        # minimum stays free for a replica that starts).
        until_truthy(
            lambda: (s := _shares(controller, a.name, b.name)) and s[a.name] >= 8,
            20,
            "replica-a's share growing with its load",
        )
        budget = _budget(controller)
        assert budget["total"] == BUDGET and budget["source"] == "replicas"
        assert budget["demand"]["replica-a"] > budget["demand"]["replica-b"]

        # The load moves to b: the shares follow.
        watch.workers.update({a.url: 1, b.url: 24})
        until_truthy(
            lambda: (
                (s := _shares(controller, a.name, b.name)) and s[b.name] >= 8 and s[a.name] <= 3
            ),
            20,
            "the shares following the load from replica-a to replica-b",
        )
        before = _shares(controller, b.name)
        assert before is not None

        # A third replica starts, loaded too: it starts at the minimum, and its share
        # comes out of b's.
        with ExitStack() as third:
            c = third.enter_context(_replica("replica-c", env, c_port))
            watch.workers[c.url] = 24  # its workers were waiting for it
            first = _limit(httpx.get(c.metrics, timeout=5).text)
            assert first == 1, f"replica-c started at {first}, not the minimum"
            watch.sampled[c.name] = c
            shares = until_truthy(
                lambda: (s := _shares(controller, c.name)) and s[c.name] >= 3 and s,
                20,
                "replica-c getting a share",
            )
            assert shares[b.name] < before[b.name], (shares, before)
            decisions = httpx.get(
                f"{controller}/api/v1/decisions", params={"limit": 2000}, timeout=5
            ).json()
            said = [d["reason"] for d in decisions if d.get("knob") == "bulkhead.db"]
            assert any(f"budget db {BUDGET}: share " in r for r in said), said[:5]
            watch.workers[c.url] = 0
            del watch.sampled[c.name]  # before it stops (it cannot be read while it does)
        # c stopped: its share goes back to b.
        until_truthy(
            lambda: (s := _shares(controller, b.name)) and "replica-c" not in s and s[b.name] >= 8,
            20,
            "replica-c's share returning",
        )

    samples = watch.samples
    assert len(samples) >= 20, f"only {len(samples)} samples"
    over = [s for s in samples if sum(s.values()) > BUDGET]
    assert over == [], f"the enforced limits exceeded the budget {BUDGET}: {over[:5]}"
    # The load did press on the budget: the limits reached it (not a vacuous check).
    assert max(sum(s.values()) for s in samples) >= BUDGET - 2
