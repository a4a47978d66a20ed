"""Job benchmark: how fast one worker drains a backlog, and what ``POST /signup`` costs
while it does.

Run as ``python -m surgeguard_loadtest.bench.jobs [--signups N] [--rate R] [--latency-ms L]
[--concurrency C] [--baseline-s S] [--out FILE.json]``.

One embedded Redis, one target (``surgeguard target``) and one worker process
(``surgeguard worker``), all on loopback:

1. seed ``N`` signups (default 20,000): ``N`` welcome-email jobs, each a simulated send
   of ``L`` ms (default 5), plus their ``N`` analytics jobs;
2. send ``POST /signup`` at ``R`` requests/s (default 200), open loop: each request's
   latency counts from when it was due, so a stalled server cannot hide its queue;
3. after ``S`` seconds (the baseline, no worker), start the worker;
4. drain rate = ``N`` / (delivery time of the last seeded email - that of the first),
   both read from the outbox entry ids (Redis's clock, ms);
5. signup latency while draining = p50/p99/max of the requests due in that window.

Checks: every seeded and every accepted signup delivered exactly once, every POST
answered 202, the worker exits 0 on SIGTERM. Goals: at least 2,000 emails/s, signup
p99 under 10 ms. Exit status: 0 when the checks passed (goals met or not: they are
reported), 1 when a check failed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvloop

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.runtime.process import terminate
from surgeguard_loadtest.processes import (
    HOST,
    READY_TIMEOUT_S,
    ChildError,
    child_env,
    free_port,
    spawn,
    tail,
    wait_healthy,
)
from surgeguard_target_app.jobs.streams import JOB_STREAMS, OUTBOX_STREAM, enqueue_signups

DRAIN_TIMEOUT_S = 300.0
CONNECTIONS = 16  # keep-alive connections of the load client
SEED_BATCH = 2_000  # signups per seeding transaction
GOALS = {"emails_per_s": 2_000.0, "signup_p99_ms": 10.0}
METRICS_LINE = re.compile(r"metrics on (http://\S+)/metrics")


class BenchError(RuntimeError):
    """The benchmark could not run (a child that would not start, a drain that hung)."""


# -- children -------------------------------------------------------------------------


async def worker_metrics_url(log: Path, process: subprocess.Popen[bytes]) -> str:
    """The worker prints where its metrics are; wait for that line.

    Async: the load keeps its schedule meanwhile (a blocking wait here would hold
    back requests and then fire them in a burst, which the latency would blame on
    the server)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        url = _printed_metrics_url(log)
        if url:
            return url
        if process.poll() is not None:
            raise BenchError(f"the worker exited:\n{tail(log)}")
        await asyncio.sleep(0.05)
    raise BenchError(f"the worker printed no metrics address:\n{tail(log)}")


def _printed_metrics_url(log: Path) -> str | None:
    """The metrics address in the worker's log, once it printed it (a small file)."""
    found = METRICS_LINE.search(log.read_text(errors="replace")) if log.exists() else None
    return found.group(1) if found else None


@contextmanager
def stack(work_dir: Path) -> Iterator[tuple[EmbeddedRedis, str, subprocess.Popen[bytes]]]:
    """Redis and a target; both stopped on the way out."""
    server = EmbeddedRedis(data_dir=work_dir / "redis")
    server.start()
    target: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        log = work_dir / "target.log"
        target = spawn(["target", "--host", HOST, "--port", str(port)], child_env(server.url), log)
        url = f"http://{HOST}:{port}"
        wait_healthy(f"{url}/healthz", target, log)
        yield server, url, target
    finally:
        if target is not None:
            terminate(target, timeout_s=10.0)
        server.stop()


# -- the load -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request: when it was due (unix seconds), its latency (seconds), status, id."""

    due: float
    latency_s: float
    status: int
    signup_id: str


class SignupClient:
    """POST /signup over a few keep-alive connections, with hardly any client cost:
    prebuilt request bytes and a hand-read response (no HTTP library on the path)."""

    def __init__(self, url: str, connections: int = CONNECTIONS) -> None:
        parsed = httpx.URL(url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._size = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self._size):
            self._idle.put_nowait(await asyncio.open_connection(self._host, self._port))

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()

    async def post(self, number: int) -> tuple[int, str]:
        body = b'{"email":"load%d@example.com","name":"Load"}' % number
        request = (
            b"POST /signup HTTP/1.1\r\nHost: %s\r\nX-Api-Key: demo-key\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (self._host.encode(), len(body), body)
        )
        reader, writer = await self._idle.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            answer = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            reader, writer = await asyncio.open_connection(self._host, self._port)
            raise
        finally:
            self._idle.put_nowait((reader, writer))
        status = int(head[9:12])
        signup_id = json.loads(answer).get("id", "") if status == 202 else ""
        return status, signup_id


async def open_loop(client: SignupClient, rate: float, stop: asyncio.Event) -> list[Sample]:
    """Send at ``rate`` requests/s until ``stop``; latency from each request's due time.

    Timed with ``perf_counter``: uvloop's ``loop.time()`` only moves in whole ms."""
    clock = time.perf_counter
    start, start_wall = clock(), time.time()
    samples: list[Sample] = []

    async def one(number: int, due: float) -> None:
        try:
            status, signup_id = await client.post(number)
        except (OSError, asyncio.IncompleteReadError):
            status, signup_id = 0, ""
        samples.append(Sample(start_wall + (due - start), clock() - due, status, signup_id))

    tasks: list[asyncio.Task[None]] = []
    number = 0
    while not stop.is_set():
        due = start + number / rate
        if due > clock():
            await asyncio.sleep(due - clock())
        tasks.append(asyncio.create_task(one(number, due)))
        number += 1
    await asyncio.gather(*tasks)
    return samples


# -- one run --------------------------------------------------------------------------


@dataclass
class Result:
    """Figures of one run. Times in seconds unless named ms; rates per second."""

    command: str
    signups: int
    rate: float
    latency_ms: float
    concurrency: int
    drain_s: float = 0.0
    emails_per_s: float = 0.0
    signup_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    worker_processed: dict[str, float] = field(default_factory=dict)
    worker_exit: int | None = None
    failures: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)

    def goals(self) -> dict[str, bool]:
        during = self.signup_ms.get("during_drain", {})
        return {
            "emails_per_s": self.emails_per_s >= GOALS["emails_per_s"],
            "signup_p99_ms": during.get("p99", float("inf")) < GOALS["signup_p99_ms"],
        }


def latency_summary(samples: Sequence[Sample]) -> dict[str, float]:
    """count, p50, p99, max of ``samples`` in ms (nearest-rank percentiles)."""
    if not samples:
        return {"count": 0}
    values = sorted(s.latency_s * 1000.0 for s in samples)

    def rank(p: float) -> float:
        return values[min(len(values) - 1, max(0, round(p * len(values)) - 1))]

    return {
        "count": len(values),
        "p50": round(rank(0.50), 3),
        "p99": round(rank(0.99), 3),
        "max": round(values[-1], 3),
        "mean": round(statistics.fmean(values), 3),
    }


async def seed(client: aioredis.Redis, count: int) -> set[str]:
    ids: set[str] = set()
    for start in range(0, count, SEED_BATCH):
        people = [
            (f"seed{i}@example.com", "Seed") for i in range(start, min(count, start + SEED_BATCH))
        ]
        ids.update(await enqueue_signups(client, people))
    return ids


async def wait_drained(
    client: aioredis.Redis, seeded: int, worker: subprocess.Popen[bytes]
) -> None:
    """Until the seeded emails are out and the streams hold only what the load adds."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(OUTBOX_STREAM)
            for stream in JOB_STREAMS:
                pipe.xlen(stream)
            delivered, *backlog = await pipe.execute()
        if delivered >= seeded and sum(backlog) <= 50:
            return
        if worker.poll() is not None:
            raise BenchError(f"the worker exited with status {worker.returncode} mid-drain")
        if time.monotonic() > deadline:
            raise BenchError(f"not drained after {DRAIN_TIMEOUT_S:.0f} s ({delivered} delivered)")
        await asyncio.sleep(0.1)


async def wait_delivered(client: aioredis.Redis, count: int, timeout_s: float = 30.0) -> None:
    """Until the outbox holds ``count`` entries (or ``timeout_s``: the check reports it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await client.xlen(OUTBOX_STREAM) >= count or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def outbox_times(client: aioredis.Redis) -> dict[str, list[float]]:
    """Delivery times (unix seconds, from the entry ids) per signup id."""
    times: dict[str, list[float]] = {}
    cursor = "-"
    while True:
        page: Any = await client.xrange(OUTBOX_STREAM, min=cursor, count=5_000)
        for entry_id, fields in page:
            times.setdefault(fields[b"signup_id"].decode(), []).append(
                int(entry_id.split(b"-")[0]) / 1000.0
            )
        if len(page) < 5_000:
            return times
        cursor = "(" + page[-1][0].decode()


async def run(args: argparse.Namespace, result: Result, work_dir: Path) -> None:
    with stack(work_dir) as (server, target_url, _):
        client = aioredis.Redis.from_url(server.url)
        load = SignupClient(target_url)
        worker: subprocess.Popen[bytes] | None = None
        try:
            seeded = await seed(client, args.signups)
            await load.open()
            stop = asyncio.Event()
            sending = asyncio.create_task(open_loop(load, args.rate, stop))
            await asyncio.sleep(args.baseline_s)

            log = work_dir / "worker.log"
            env = child_env(server.url, mailer_latency_ms=str(args.latency_ms))
            worker = spawn(
                ["worker", "--concurrency", str(args.concurrency), "--metrics-port", "0"], env, log
            )
            metrics_url = await worker_metrics_url(log, worker)
            await wait_drained(client, len(seeded), worker)
            await asyncio.sleep(1.0)  # a little load after the drain, for comparison
            stop.set()
            samples = await sending

            accepted = {s.signup_id for s in samples if s.status == 202}
            expected = seeded | accepted
            await wait_delivered(client, len(expected))
            times = await outbox_times(client)
            async with httpx.AsyncClient() as http:
                result.worker_processed = _processed(
                    (await http.get(metrics_url + "/metrics")).text
                )
        finally:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    result.worker_exit = await asyncio.to_thread(worker.wait, 15.0)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            await load.close()
            await client.aclose()

    first = min(min(times[i]) for i in seeded if i in times)
    last = max(max(times[i]) for i in seeded if i in times)
    result.drain_s = round(last - first, 3)
    result.emails_per_s = round(len(seeded) / max(last - first, 1e-3), 1)
    result.signup_ms = {
        # From 1 s in (the first requests warm up connections and code paths).
        "before_worker": latency_summary(
            [s for s in samples if samples[0].due + 1.0 <= s.due < first - 0.5]
        ),
        "during_drain": latency_summary([s for s in samples if first <= s.due <= last]),
        "after_drain": latency_summary([s for s in samples if s.due > last]),
        "all": latency_summary(samples),
    }
    statuses = Counter(str(s.status) for s in samples)
    result.requests = dict(statuses)
    missing = [i for i in expected if i not in times]
    doubled = [i for i, t in times.items() if len(t) > 1]
    if missing:
        result.failures.append(f"{len(missing)} accepted signups never delivered")
    if doubled:
        result.failures.append(f"{len(doubled)} signups delivered more than once")
    if set(statuses) != {"202"}:
        result.failures.append(f"not every POST /signup got 202: {dict(statuses)}")
    if result.worker_exit != 0:
        result.failures.append(f"the worker exited with {result.worker_exit} on SIGTERM")


def _processed(text: str) -> dict[str, float]:
    found = re.findall(r'^surgeguard_jobs_processed_total\{task="(\w+)"\} (\S+)$', text, re.M)
    return {task: float(value) for task, value in found}


# -- the command ----------------------------------------------------------------------


def report(result: Result) -> str:
    during = result.signup_ms.get("during_drain", {})
    before = result.signup_ms.get("before_worker", {})
    goals = result.goals()
    lines = [
        f"command: {result.command}",
        f"backlog: {result.signups} welcome emails ({result.latency_ms:g} ms send each) "
        f"+ {result.signups} analytics jobs; one worker, concurrency {result.concurrency}",
        f"drain:   {result.signups} emails in {result.drain_s:.2f} s = "
        f"{result.emails_per_s:,.0f} emails/s (goal >= {GOALS['emails_per_s']:,.0f}: "
        f"{'met' if goals['emails_per_s'] else 'MISSED'})",
        f"POST /signup at {result.rate:g}/s while draining: p50 {during.get('p50', 0):.2f} ms, "
        f"p99 {during.get('p99', 0):.2f} ms, max {during.get('max', 0):.2f} ms over "
        f"{during.get('count', 0)} requests (goal p99 < {GOALS['signup_p99_ms']:g} ms: "
        f"{'met' if goals['signup_p99_ms'] else 'MISSED'})",
        f"  before the worker: p50 {before.get('p50', 0):.2f} ms, p99 {before.get('p99', 0):.2f}"
        f" ms over {before.get('count', 0)} requests",
        f"requests: {result.requests}; worker processed {result.worker_processed}; "
        f"worker exit {result.worker_exit}",
        f"machine: {result.machine}",
    ]
    lines += [f"CHECK FAILED: {f}" for f in result.failures]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m surgeguard_loadtest.bench.jobs", description=__doc__
    )
    parser.add_argument("--signups", type=int, default=20_000, help="backlog of email jobs")
    parser.add_argument("--rate", type=float, default=200.0, help="POST /signup per second")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="simulated send, ms")
    parser.add_argument("--concurrency", type=int, default=64, help="worker concurrency")
    parser.add_argument("--baseline-s", type=float, default=3.0, help="load before the worker")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = Result(
        command=shlex.join(
            ["python", "-m", "surgeguard_loadtest.bench.jobs", *(argv or sys.argv[1:])]
        ),
        signups=args.signups,
        rate=args.rate,
        latency_ms=args.latency_ms,
        concurrency=args.concurrency,
        machine={
            "cpus": str(os.cpu_count()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    )
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        try:
            uvloop.run(run(args, result, Path(tmp)))
        except (BenchError, ChildError) as exc:
            print(f"bench_jobs: could not run: {exc}", file=sys.stderr)
            return 2
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps({**asdict(result), "goals_met": result.goals()}, indent=2))
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
