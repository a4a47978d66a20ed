"""What ``appendfsync always`` costs on ``POST /signup``, next to ``everysec``.

Run as ``python -m surgeguard_loadtest.bench.fsync [--runs 3] [--seconds 5]
[--connections 16] [--rate 200] [--work-dir DIR] [--out FILE.json]``.

For each setting and each run: a fresh embedded Redis with that ``appendfsync`` (its
data directory under ``--work-dir``: put it on the disk you mean to measure; a tmpfs
makes fsync free) and a fresh target (``surgeguard target``) on loopback; then

1. throughput: ``--connections`` keep-alive connections send ``POST /signup`` back to
   back for ``--seconds``; accepted signups (202) per second, and p50/p99 latency;
2. latency at a fixed load: ``--rate`` requests/s, open loop (latency counts from when
   a request was due), for ``--seconds``; p50/p99;
3. Redis alone: the signup's Lua script (``store_signup``, what the route runs) back to
   back on one connection for ``--seconds``: stores per second and p50/p99. Without HTTP
   in the way this shows the fsync itself, even on a busy machine.

The report gives the median of the runs for each figure, the two settings side by side.
Exit status: 0 when every request was answered 202, 1 when some were not, 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import redis.asyncio as aioredis
import uvloop

from surgeguard.runtime.embedded_redis import EmbeddedRedis, Fsync
from surgeguard.runtime.process import terminate
from surgeguard_loadtest.bench.jobs import Sample as Timed
from surgeguard_loadtest.bench.jobs import SignupClient, latency_summary, open_loop
from surgeguard_loadtest.processes import (
    HOST,
    ChildError,
    child_env,
    free_port,
    spawn,
    wait_healthy,
)
from surgeguard_target_app.jobs.streams import store_signup

POLICIES: tuple[Fsync, ...] = get_args(Fsync)
FIGURES = (
    "signups_per_s",
    "closed_p50_ms",
    "closed_p99_ms",
    "open_p50_ms",
    "open_p99_ms",
    "redis_stores_per_s",
    "redis_p50_ms",
    "redis_p99_ms",
)


@contextmanager
def target_on(fsync: Fsync, work: Path) -> Iterator[tuple[str, str]]:
    """A fresh Redis (``appendfsync fsync``) and target; yields (target URL, Redis URL)."""
    server = EmbeddedRedis(data_dir=work / "redis", fsync=fsync)
    server.start()
    target: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        log = work / "target.log"
        target = spawn(["target", "--host", HOST, "--port", str(port)], child_env(server.url), log)
        url = f"http://{HOST}:{port}"
        wait_healthy(f"{url}/healthz", target, log)
        yield url, server.url
    finally:
        if target is not None:
            terminate(target, timeout_s=10.0)
        server.stop()


async def closed_loop(url: str, connections: int, seconds: float) -> tuple[float, list[Timed]]:
    """Back-to-back POSTs on ``connections`` connections; (202s per second, samples)."""
    client = SignupClient(url, connections)
    await client.open()
    samples: list[Timed] = []
    clock = time.perf_counter
    end = clock() + seconds

    async def sender(first: int) -> None:
        number = first
        while clock() < end:
            started = clock()
            try:
                status, signup_id = await client.post(number)
            except (OSError, asyncio.IncompleteReadError):
                status, signup_id = 0, ""
            samples.append(Timed(started, clock() - started, status, signup_id))
            number += connections

    began = clock()
    try:
        await asyncio.gather(*(sender(n) for n in range(connections)))
    finally:
        await client.close()
    accepted = sum(1 for s in samples if s.status == 202)
    return accepted / (clock() - began), samples


async def redis_alone(redis_url: str, seconds: float) -> tuple[float, list[Timed]]:
    """The signup script back to back on one connection; (stores per second, samples)."""
    client = aioredis.Redis.from_url(redis_url)
    samples: list[Timed] = []
    clock = time.perf_counter
    began = clock()
    try:
        while clock() - began < seconds:
            started = clock()
            stored = await store_signup(client, f"r{len(samples)}@example.com", "R")
            samples.append(Timed(started, clock() - started, 202, stored.id))
    finally:
        await client.aclose()
    return len(samples) / (clock() - began), samples


async def measure(
    url: str, redis_url: str, args: argparse.Namespace
) -> tuple[dict[str, float], int]:
    """One run's figures, and how many requests were not answered 202."""
    rate, closed = await closed_loop(url, args.connections, args.seconds)
    client = SignupClient(url, args.connections)
    await client.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(args.seconds, stop.set)
    try:
        opened = await open_loop(client, args.rate, stop)
    finally:
        await client.close()
    stores, alone = await redis_alone(redis_url, args.seconds)
    c, o, r = latency_summary(closed), latency_summary(opened), latency_summary(alone)
    figures = {
        "signups_per_s": round(rate, 1),
        "closed_p50_ms": c["p50"],
        "closed_p99_ms": c["p99"],
        "open_p50_ms": o["p50"],
        "open_p99_ms": o["p99"],
        "redis_stores_per_s": round(stores, 1),
        "redis_p50_ms": r["p50"],
        "redis_p99_ms": r["p99"],
    }
    return figures, sum(1 for s in [*closed, *opened] if s.status != 202)


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, list[dict[str, float]]], int]:
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
    refused = 0
    for n in range(args.runs):
        for policy in POLICIES:  # interleaved: a drifting machine hits both alike
            here = work / f"{policy}-{n}"
            here.mkdir(parents=True)
            with target_on(policy, here) as (url, redis_url):
                figures, bad = uvloop.run(measure(url, redis_url, args))
            runs[policy].append(figures)
            refused += bad
            print(f"run {n + 1} {policy}: {figures}", file=sys.stderr, flush=True)
    return runs, refused


def medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        policy: {f: round(statistics.median(r[f] for r in results), 2) for f in FIGURES}
        for policy, results in runs.items()
    }


def report(table: dict[str, dict[str, float]], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"POST /signup, median of {args.runs} runs ({args.seconds:g} s each phase; closed loop "
        f"on {args.connections} connections, open loop at {args.rate:g}/s)",
        f"{'appendfsync':<20}" + "".join(f"{p:>12}" for p in POLICIES),
    ]
    for figure in FIGURES:
        lines.append(f"{figure:<20}" + "".join(f"{table[p][figure]:>12g}" for p in POLICIES))
    lines.append(f"command: {command}")
    lines.append(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m surgeguard_loadtest.bench.fsync", description=__doc__
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (median)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase, s")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--work-dir", type=Path, help="where Redis writes (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = shlex.join(
        ["python", "-m", "surgeguard_loadtest.bench.fsync", *(argv or sys.argv[1:])]
    )
    with tempfile.TemporaryDirectory(prefix="bench-fsync-", dir=args.work_dir) as tmp:
        try:
            runs, refused = run(args, Path(tmp))
        except ChildError as exc:
            print(f"bench_fsync: could not run: {exc}", file=sys.stderr)
            return 2
    table = medians(runs)
    print(report(table, args, command))
    if refused:
        print(f"CHECK FAILED: {refused} request(s) not answered 202", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"medians": table, "runs": runs}, indent=2))
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
