"""Issue 4, the worker in this process on a real Redis (and a real target where a test
reads ``GET /signups/{id}``): jobs end done with one effect each, poison jobs end
dead without holding others up, malformed entries become dead letters, stuck entries
are reclaimed, and a stop hands back what could not finish."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.jobs.streams import (
    ANALYTICS_COUNTS_KEY,
    ANALYTICS_STREAM,
    DEAD_STREAM,
    EMAIL_STREAM,
    GROUP,
    OUTBOX_STREAM,
    SIGNUP_KEY,
    enqueue_signups,
)
from surgeguard_target_app.worker.mailer import Mailer
from surgeguard_target_app.worker.metrics import WorkerMetrics
from surgeguard_target_app.worker.retry_policy import RetryPolicy
from surgeguard_target_app.worker.tasks import build_handlers
from surgeguard_target_app.worker.worker import Worker, WorkerConfig
from tests.target_app.conftest import API_KEY, StartTarget

DEADLINE_S = 15.0


@dataclass
class RunningWorker:
    worker: Worker
    registry: CollectorRegistry
    task: asyncio.Task[None]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_worker(
    url: str,
    *,
    mailer: Mailer | None = None,
    consumer: str = "w1",
    concurrency: int = 8,
    policy: RetryPolicy | None = None,
    job_timeout_s: float = 2.0,
    reclaim_idle_ms: int = 5_000,
    shutdown_timeout_s: float = 2.0,
) -> AsyncIterator[RunningWorker]:
    """A worker running on this test's event loop; stopped (gracefully) at the end."""
    client = aioredis.Redis.from_url(url)
    store = JobStore(client)
    registry = CollectorRegistry()
    handlers = build_handlers(mailer or Mailer(latency_s=0.0, sender=consumer))
    config = WorkerConfig(
        consumer,
        concurrency=concurrency,
        policy=policy or RetryPolicy(max_attempts=3, base_s=0.02, cap_s=0.1),
        job_timeout_s=job_timeout_s,
        reclaim_idle_ms=reclaim_idle_ms,
        shutdown_timeout_s=shutdown_timeout_s,
        sample_period_s=0.05,
    )
    metrics = WorkerMetrics(registry, tasks=handlers, streams=store.streams)
    worker = Worker(store, handlers, config, metrics, rng=random.Random(4))
    task = asyncio.create_task(worker.run())
    try:
        yield RunningWorker(worker, registry, task)
    finally:
        worker.stop()
        await asyncio.wait_for(task, DEADLINE_S)
        await client.aclose()


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after the deadline."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        holds = check()
        if holds if isinstance(holds, bool) else await holds:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def statuses(client: redis.Redis, ids: list[str]) -> list[str]:
    return [(client.hget(SIGNUP_KEY.format(id=i), "status") or b"").decode() for i in ids]


def all_done(client: redis.Redis, ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return set(statuses(client, ids)) == {"done"}

    return check


def outbox_signups(client: redis.Redis) -> list[str]:
    return [f[b"signup_id"].decode() for _, f in client.xrange(OUTBOX_STREAM)]


async def test_signups_end_done_with_one_email_and_one_count_each(
    start_target: StartTarget, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    target = start_target()
    async with (
        httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=5.0) as http,
        running_worker(redis_server.url) as running,
    ):
        posted = [
            await http.post("/signup", json={"email": f"u{i}@example.com", "name": "U"})
            for i in range(20)
        ]
        assert {r.status_code for r in posted} == {202}
        ids = [r.json()["id"] for r in posted]
        await eventually(all_done(redis_client, ids), "every signup done")
        report = (await http.get(f"/signups/{ids[0]}")).json()
        assert report == {"id": ids[0], "status": "done", "attempts": 1, "last_error": None}
        await eventually(
            lambda: running.metric("surgeguard_jobs_processed_total", task="analytics") == 20,
            "analytics counted",
        )
        assert running.metric("surgeguard_jobs_processed_total", task="welcome_email") == 20
        assert running.metric("surgeguard_worker_concurrency_limit") == 8
    assert sorted(outbox_signups(redis_client)) == sorted(ids)
    assert redis_client.hget(ANALYTICS_COUNTS_KEY, "signup") == b"20"
    assert redis_client.xlen(EMAIL_STREAM) == redis_client.xlen(ANALYTICS_STREAM) == 0


async def test_a_poison_job_ends_dead_after_n_attempts_and_holds_nobody_up(
    start_target: StartTarget, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        # The poison job is first in line, and the worker runs one job at a time: if a
        # failing job kept its slot while it backs off, everyone would wait behind it.
        [poison] = await enqueue_signups(client, [("mallory@bounce.example", "M")])
        others = await enqueue_signups(client, [(f"u{i}@example.com", "U") for i in range(50)])
    finally:
        await client.aclose()
    mailer = Mailer(latency_s=0.0, poison=r"@bounce\.example$")
    policy = RetryPolicy(max_attempts=3, base_s=0.4, cap_s=1.0)  # waits >= 0.2 s, then 0.4 s
    target = start_target()
    async with (
        running_worker(redis_server.url, mailer=mailer, concurrency=1, policy=policy) as running,
        httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=5.0) as http,
    ):
        await eventually(all_done(redis_client, others), "the other signups done")
        assert statuses(redis_client, [poison]) == ["queued"]  # still between attempts

        async def poison_dead() -> bool:
            return (await http.get(f"/signups/{poison}")).json()["status"] == "dead"

        await eventually(poison_dead, "the poison job dead")
        report = (await http.get(f"/signups/{poison}")).json()
        assert report["attempts"] == 3
        assert "mallory@bounce.example rejected the message" in report["last_error"]
        assert running.metric("surgeguard_jobs_dead_total", task="welcome_email") == 1
        assert running.metric("surgeguard_jobs_failed_total", task="welcome_email") == 3
        assert running.metric("surgeguard_jobs_processed_total", task="welcome_email") == 50
        await eventually(
            lambda: running.metric("surgeguard_jobs_dead_letters") == 1,
            "the dead-letter gauge",
        )
    [(_, letter)] = redis_client.xrange(DEAD_STREAM)
    assert letter[b"signup_id"] == poison.encode() and letter[b"attempts"] == b"3"
    assert b"poison pattern" in letter[b"error"]
    assert poison not in outbox_signups(redis_client)


async def test_malformed_entries_become_dead_letters_and_the_worker_goes_on(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    hand_written: list[dict[bytes, bytes]] = [
        {b"hello": b"world"},
        {b"task": b"welcome_email", b"idempotency_key": b"k1"},
        {b"task": b"welcome_email", b"signup_id": b"nope", b"email": b"a@b.cc",
         b"idempotency_key": b"k2"},
        {b"task": b"analytics", b"event": b"\xff", b"idempotency_key": b"k3"},
    ]  # fmt: skip
    for fields in hand_written:
        redis_client.xadd(EMAIL_STREAM, fields)  # type: ignore[arg-type]
    async with running_worker(redis_server.url) as running:
        await eventually(lambda: redis_client.xlen(DEAD_STREAM) == 4, "4 dead letters")
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            ids = await enqueue_signups(client, [("ok@example.com", "Ok")])
        finally:
            await client.aclose()
        await eventually(all_done(redis_client, ids), "a good signup after the bad ones")
        assert not running.task.done()
        assert running.metric("surgeguard_jobs_dead_total", task="malformed") == 4
    errors = [f[b"error"].decode() for _, f in redis_client.xrange(DEAD_STREAM)]
    assert errors == [
        "malformed job: missing field 'task'",
        "malformed job: task 'welcome_email' needs field 'signup_id', missing or empty",
        "malformed job: field 'signup_id' must be 32 hex digits, got 'nope'",
        "malformed job: field b'event' is not UTF-8 text",
    ]
    [(_, first)] = redis_client.xrange(DEAD_STREAM, count=1)
    assert first[b"task"] == b"malformed" and first[b"fields"] == b'{"hello": "world"}'
    assert redis_client.xlen(EMAIL_STREAM) == 0


async def test_an_entry_stuck_with_a_silent_consumer_is_reclaimed(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        [signup_id] = await enqueue_signups(client, [("ada@example.com", "Ada")])
        store = JobStore(client)
        await store.ensure_groups()
        held = await store.read("crashed", 10, 100)  # delivered, then never settled
        assert len(held) == 2
    finally:
        await client.aclose()
    async with running_worker(redis_server.url, job_timeout_s=0.1, reclaim_idle_ms=200) as running:
        await eventually(all_done(redis_client, [signup_id]), "the reclaimed signup done")
        assert running.metric("surgeguard_jobs_reclaimed_total") >= 1
    assert outbox_signups(redis_client) == [signup_id]
    assert redis_client.xpending(EMAIL_STREAM, GROUP)["pending"] == 0


async def test_stop_hands_back_unfinished_jobs_for_the_next_worker(
    redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        ids = await enqueue_signups(client, [(f"u{i}@example.com", "U") for i in range(3)])
    finally:
        await client.aclose()
    slow = Mailer(latency_s=30.0)
    async with running_worker(
        redis_server.url, mailer=slow, job_timeout_s=60, reclaim_idle_ms=120_000,
        shutdown_timeout_s=0.1,
    ) as running:  # fmt: skip
        await eventually(
            lambda: statuses(redis_client, ids) == ["processing"] * 3, "jobs processing"
        )
        running.worker.stop()
        await asyncio.wait_for(running.task, 5.0)  # well before the 30 s sends would end
    # Not acknowledged, not failed: pending, uncounted, and idle long enough to reclaim.
    assert statuses(redis_client, ids) == ["queued"] * 3
    assert {redis_client.hget(SIGNUP_KEY.format(id=i), "attempts") for i in ids} == {b"0"}
    pending = redis_client.xpending_range(EMAIL_STREAM, GROUP, "-", "+", 10)
    assert len(pending) == 3
    assert min(p["time_since_delivered"] for p in pending) >= 120_000

    async with running_worker(redis_server.url, consumer="w2", reclaim_idle_ms=120_000):
        await eventually(all_done(redis_client, ids), "the handed-back jobs done elsewhere")
    assert sorted(outbox_signups(redis_client)) == sorted(ids)


async def test_signups_say_so_when_the_backlog_passes_its_limit(
    start_target: StartTarget, redis_client: redis.Redis
) -> None:
    target = start_target(job_backlog_limit=2)
    async with httpx.AsyncClient(base_url=target.url, headers=API_KEY, timeout=5.0) as http:
        first = await http.post("/signup", json={"email": "a@example.com", "name": "A"})
        assert first.status_code == 202 and "X-Degraded" not in first.headers

        async def flagged() -> bool:  # the backlog is sampled once a second
            response = await http.post("/signup", json={"email": "a@example.com", "name": "A"})
            assert response.status_code == 202  # stored all the same
            return response.headers.get("X-Degraded") == "jobs_backlog"

        await eventually(flagged, "X-Degraded: jobs_backlog")
        metrics = (await http.get("/metrics")).text
    assert "surgeguard_jobs_backlog_limit 2.0" in metrics
