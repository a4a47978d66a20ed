"""Issue 4 with real processes where crashes matter: ``python -m surgeguard worker``
children on a real Redis. A worker SIGKILLed mid-backlog, two workers sharing one,
SIGTERM handing jobs back, and Redis restarted under a real target while signups flow.
Every child is stopped by its pid in teardown."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.runtime.process import die_with_parent
from surgeguard_target_app.jobs.streams import (
    ANALYTICS_COUNTS_KEY,
    ANALYTICS_STREAM,
    DEAD_STREAM,
    EMAIL_STREAM,
    GROUP,
    OUTBOX_STREAM,
    SIGNUP_KEY,
    enqueue_signups,
    store_signup,
)
from tests.support.processes import child_env
from tests.target_app.conftest import API_KEY, StartTarget

SURGEGUARD = [sys.executable, "-m", "surgeguard"]
DEADLINE_S = 30.0
METRICS_LINE = re.compile(r"metrics on (http://\S+)/metrics")
# Quick reclaim for tests: a killed worker's jobs are taken over after 1 s.
FAST = {"job_timeout_ms": 500, "job_reclaim_idle_ms": 1000, "job_backoff_base_ms": 20}


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5.0).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(name, redis_url, **settings)`` -> a ready worker process."""
    started: list[WorkerProcess] = []

    def start(name: str, redis_url: str, **settings: Any) -> WorkerProcess:
        env = child_env(redis_url, **{k: str(v) for k, v in settings.items()})
        log = tmp_path / f"worker-{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*SURGEGUARD, "worker", "--consumer", name, "--metrics-port", "0"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),
            )
        worker = WorkerProcess(name, process, log)
        started.append(worker)

        def ready() -> bool:
            assert process.poll() is None, f"worker {name} exited:\n{worker.tail()}"
            found = METRICS_LINE.search(log.read_text(errors="replace"))
            if found is None:
                return False
            worker.url = found.group(1)
            try:
                return httpx.get(f"{worker.url}/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, f"worker {name} ready")
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait()


def seed(redis_url: str, count: int) -> list[str]:
    """``count`` signups (two jobs each) stored in Redis; their ids."""

    async def enqueue() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            ids: list[str] = []
            for start in range(0, count, 1000):
                people = [
                    (f"u{i}@example.com", "U") for i in range(start, min(count, start + 1000))
                ]
                ids += await enqueue_signups(client, people)
            return ids
        finally:
            await client.aclose()

    return asyncio.run(enqueue())


def signup_statuses(client: redis.Redis, ids: list[str]) -> collections.Counter[str]:
    with client.pipeline(transaction=False) as pipe:
        for signup_id in ids:
            pipe.hget(SIGNUP_KEY.format(id=signup_id), "status")
        return collections.Counter((s or b"").decode() for s in pipe.execute())


def delivered(client: redis.Redis) -> collections.Counter[str]:
    """How often each signup's welcome email is in the outbox."""
    return collections.Counter(f[b"signup_id"].decode() for _, f in client.xrange(OUTBOX_STREAM))


def drained(client: redis.Redis, ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        return (
            client.xlen(OUTBOX_STREAM) >= len(ids)
            and client.xlen(EMAIL_STREAM) + client.xlen(ANALYTICS_STREAM) == 0
            and signup_statuses(client, ids) == {"done": len(ids)}
        )

    return check


def test_a_worker_killed_mid_backlog_loses_nothing_and_doubles_nothing(
    spawn: Spawn, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    ids = seed(redis_server.url, 3000)  # 6,000 jobs
    redis_client.xadd(EMAIL_STREAM, {"task": "teleport"})  # and one written by hand
    first = spawn("first", redis_server.url, mailer_latency_ms=2, worker_concurrency=32, **FAST)
    wait_until(lambda: redis_client.xlen(OUTBOX_STREAM) >= 600, "the first deliveries")
    first.process.kill()
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    assert redis_client.xlen(OUTBOX_STREAM) < len(ids), "killed too late to prove anything"
    stranded = sum(
        redis_client.xpending(s, GROUP)["pending"] for s in (EMAIL_STREAM, ANALYTICS_STREAM)
    )
    assert stranded > 0, "nothing was in flight at the kill"

    second = spawn("second", redis_server.url, mailer_latency_ms=2, worker_concurrency=32, **FAST)
    wait_until(drained(redis_client, ids), "every signup done")
    counts = delivered(redis_client)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, "an email was delivered twice"
    assert redis_client.hget(ANALYTICS_COUNTS_KEY, "signup") == str(len(ids)).encode()
    assert second.metric("surgeguard_jobs_reclaimed_total") >= 1
    assert redis_client.xlen(DEAD_STREAM) == 1  # only the hand-written entry
    assert second.stop() == 0, second.tail()


def test_two_workers_share_a_backlog_without_double_effects(
    spawn: Spawn, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    workers = [
        spawn(name, redis_server.url, mailer_latency_ms=5, worker_concurrency=4, **FAST)
        for name in ("left", "right")
    ]
    ids = seed(redis_server.url, 1500)
    wait_until(drained(redis_client, ids), "every signup done")
    counts = delivered(redis_client)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    by_worker = collections.Counter(
        f[b"worker"].decode() for _, f in redis_client.xrange(OUTBOX_STREAM)
    )
    assert min(by_worker["left"], by_worker["right"]) > len(ids) // 10, by_worker
    processed = sum(
        w.metric("surgeguard_jobs_processed_total", task="welcome_email") for w in workers
    )
    assert processed == len(ids)
    assert [w.stop() for w in workers] == [0, 0]


def test_sigterm_hands_back_running_jobs_and_exits_0(
    spawn: Spawn, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    slow = spawn(
        "slow", redis_server.url, mailer_latency_ms=20_000, job_timeout_ms=30_000,
        job_reclaim_idle_ms=60_000, worker_shutdown_timeout_ms=200,
    )  # fmt: skip
    ids = seed(redis_server.url, 5)
    wait_until(lambda: signup_statuses(redis_client, ids) == {"processing": 5}, "jobs running")
    started = time.monotonic()
    assert slow.stop() == 0, slow.tail()
    assert time.monotonic() - started < 5.0  # not the 20 s the sends would take
    assert signup_statuses(redis_client, ids) == {"queued": 5}
    pending = redis_client.xpending_range(EMAIL_STREAM, GROUP, "-", "+", 10)
    assert len(pending) == 5 and min(p["time_since_delivered"] for p in pending) >= 60_000
    assert re.search(r"handed back \d+ job\(s\)", slow.tail()), slow.tail()

    spawn("fast", redis_server.url, mailer_latency_ms=0, job_reclaim_idle_ms=60_000)
    wait_until(drained(redis_client, ids), "the handed-back jobs done by the next worker")
    assert set(delivered(redis_client).values()) == {1}


def test_a_retried_signup_sends_one_email(
    spawn: Spawn, start_target: StartTarget, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """Issue 13: the same Idempotency-Key is the same signup, so one welcome email."""
    target = start_target()
    lost = asyncio.run(_store_as_the_route_does(redis_server.url, "k-lost"))
    with httpx.Client(base_url=target.url, headers=API_KEY, timeout=5.0) as http:
        body = {"email": "ada@example.com", "name": "Ada"}
        twice = [
            http.post("/signup", json=body, headers={"Idempotency-Key": "k-1"}) for _ in range(2)
        ]
        retry = http.post("/signup", json=body, headers={"Idempotency-Key": "k-lost"})
    assert [r.status_code for r in twice] == [202, 202]
    assert twice[0].json() == twice[1].json()
    assert retry.status_code == 202 and retry.json()["id"] == lost
    ids = [twice[0].json()["id"], lost]
    spawn("once", redis_server.url, mailer_latency_ms=0, **FAST)
    wait_until(drained(redis_client, ids), "both signups done")
    assert delivered(redis_client) == {ids[0]: 1, lost: 1}


async def _store_as_the_route_does(url: str, key: str) -> str:
    """A signup stored whose answer was lost (the client saw a 503 or its timeout)."""
    client = aioredis.Redis.from_url(url)
    try:
        stored = await store_signup(
            client, "ada@example.com", "Ada", idempotency_key=key, client_key="demo-key"
        )
        return stored.id
    finally:
        await client.aclose()


def test_the_outbox_and_the_dead_letters_are_trimmed(
    spawn: Spawn, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """Issue 13: retention. Delivered emails and dead letters keep about their MAXLEN."""
    seed(redis_server.url, 300)
    poisoned = asyncio.run(_seed_people(redis_server.url, "bounce", 300))
    spawn(
        "trim",
        redis_server.url,
        mailer_latency_ms=0,
        mailer_poison_pattern="@bounce[.]",
        job_max_attempts=1,
        outbox_maxlen=100,
        dead_letters_maxlen=100,
        **FAST,
    )
    wait_until(
        lambda: (
            signup_statuses(redis_client, poisoned) == {"dead": len(poisoned)}
            and redis_client.xlen(EMAIL_STREAM) + redis_client.xlen(ANALYTICS_STREAM) == 0
        ),
        "every job settled",
    )
    # MAXLEN ~ trims whole nodes of 100 entries: about 100 each, never all 300.
    assert 100 <= redis_client.xlen(OUTBOX_STREAM) < 200
    assert 100 <= redis_client.xlen(DEAD_STREAM) < 200


async def _seed_people(url: str, domain: str, count: int) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return await enqueue_signups(
            client, [(f"u{i}@{domain}.example", "U") for i in range(count)]
        )
    finally:
        await client.aclose()


def test_redis_restart_while_signups_flow_loses_no_accepted_job(
    spawn: Spawn, start_target: StartTarget, tmp_path: Path
) -> None:
    own = EmbeddedRedis(data_dir=tmp_path / "redis")
    own.start()
    port = own.port
    stop = threading.Event()
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    other: list[int] = []

    def post_signups(url: str) -> None:
        with httpx.Client(base_url=url, headers=API_KEY, timeout=5.0) as http:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                response = http.post("/signup", json={"email": f"u{i}@example.com", "name": "U"})
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                elif response.status_code == 503:
                    refused.append(response)
                else:
                    other.append(response.status_code)

    client = threading.Thread(target=lambda: None)
    try:
        target = start_target(redis_url=own.url)
        worker = spawn("survivor", own.url, mailer_latency_ms=1, **FAST)
        client = threading.Thread(target=post_signups, args=(target.url,), daemon=True)
        client.start()
        wait_until(lambda: len(accepted) >= 100, "signups before the outage")

        own.stop()  # SIGTERM: Redis writes its append-only file and exits
        wait_until(lambda: len(refused) >= 5, "signups refused during the outage")
        own = EmbeddedRedis(data_dir=tmp_path / "redis", port=port)
        own.start()
        at_restart = len(accepted)
        wait_until(lambda: len(accepted) >= at_restart + 100, "signups after the restart")
        stop.set()
        client.join(timeout=10)

        check = redis.Redis.from_url(own.url)
        try:
            wait_until(drained(check, accepted), "every accepted signup done")
            counts = delivered(check)
            assert set(counts.values()) == {1}, "an email was delivered twice"
            assert set(accepted) <= set(counts)
            # A signup stored just as Redis stopped may have lost its reply: the client
            # got a 503 for it, yet it is done. At most one (one client, one request
            # in flight); what must never happen is a 202 without the job.
            assert len(set(counts) - set(accepted)) <= 1
        finally:
            check.close()
        assert other == []
        assert all(r.headers["Retry-After"].isdigit() for r in refused)
        assert {r.json()["dependency"] for r in refused} == {"redis"}
        assert worker.process.poll() is None, worker.tail()  # it waited Redis out
        assert worker.stop() == 0, worker.tail()
    finally:
        stop.set()
        client.join(timeout=10)
        own.stop()


# -- the command line -------------------------------------------------------------------


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SURGEGUARD_")}
    return subprocess.run(
        [*SURGEGUARD, *args], env={**clean, **env}, capture_output=True, text=True, timeout=30
    )


def test_worker_help_names_its_settings() -> None:
    result = run_cli("worker", "--help")
    assert result.returncode == 0
    assert "SURGEGUARD_REDIS_URL" in result.stdout and "--concurrency" in result.stdout


NOWHERE = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "SURGEGUARD_REDIS_URL is not set"),
        (
            {
                "SURGEGUARD_REDIS_URL": NOWHERE,
                "SURGEGUARD_JOB_TIMEOUT_MS": "5000",
                "SURGEGUARD_JOB_RECLAIM_IDLE_MS": "1000",
            },
            "SURGEGUARD_JOB_RECLAIM_IDLE_MS (1000) must exceed SURGEGUARD_JOB_TIMEOUT_MS (5000)",
        ),
        (
            {"SURGEGUARD_REDIS_URL": NOWHERE, "SURGEGUARD_MAILER_FAILURE_RATE": "2"},
            "SURGEGUARD_MAILER_FAILURE_RATE",
        ),
    ],
)
def test_worker_refuses_settings_that_cannot_work_in_one_line(
    env: dict[str, str], expected: str
) -> None:
    result = run_cli("worker", **env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
