"""Benchmark: the controller's history endpoint with one hour of 1 s history.

A real target and controller run for a few ticks; one real tick record is then
copied into an hour of history (3,600 records, two replicas' worth of signals), and
``GET /api/v1/history?seconds=3600`` is timed from a client on the same machine.

    python -m surgeguard_loadtest.bench.history [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller.store import HISTORY_KEY, MAX_HISTORY
from surgeguard_loadtest.processes import HOST, child_env, free_port, running

TOKEN = "bench-admin-token-of-24-chars"  # operator tokens are 24 characters or more


def fill_history(redis_url: str, template: dict[str, object], replicas: int) -> int:
    """``MAX_HISTORY`` copies of ``template`` (with ``replicas`` replicas), one per second
    ending now; returns the size of one record in bytes."""
    one = dict(template)
    source = dict(template["replicas"])  # type: ignore[call-overload]
    first = next(iter(source.values()))
    one["replicas"] = {f"replica-{n}": first for n in range(replicas)}
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.delete(HISTORY_KEY)
    size = 0
    for i in range(MAX_HISTORY):
        one["at"] = now - MAX_HISTORY + i + 1
        encoded = json.dumps(one, separators=(",", ":"))
        size = len(encoded)
        pipe.zadd(HISTORY_KEY, {encoded: float(one["at"])})  # type: ignore[arg-type]
    pipe.execute()
    client.close()
    return size


@contextmanager
def stack_with_an_hour_of_history(replicas: int) -> Iterator[tuple[str, int]]:
    """A real target and controller whose history holds an hour of real tick records
    (one copied 3,600 times); yields (controller URL, bytes of one record)."""
    with (
        tempfile.TemporaryDirectory() as work,
        EmbeddedRedis(data_dir=Path(work) / "redis") as server,
    ):
        env = child_env(server.url, admin_token=TOKEN)
        tport, cport = free_port(), free_port()
        target, ctl = f"http://{HOST}:{tport}", f"http://{HOST}:{cport}"
        with (
            running(["target", "--port", str(tport)], env, f"{target}/healthz"),
            running(
                ["controller", "--target", target, "--port", str(cport)], env, f"{ctl}/healthz"
            ),
            httpx.Client(timeout=10) as client,
        ):
            deadline = time.monotonic() + 20
            while True:
                client.get(f"{target}/items/7", headers={"X-Api-Key": "demo-key"})
                records = client.get(f"{ctl}/api/v1/history", params={"seconds": 60}).json()
                if records and records[-1].get("aggregate"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the controller recorded no tick within 20 s")
                time.sleep(0.5)
            yield ctl, fill_history(server.url, records[-1], replicas)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m surgeguard_loadtest.bench.history", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args(argv)
    with (
        stack_with_an_hour_of_history(args.replicas) as (ctl, size),
        httpx.Client(timeout=10) as client,
    ):
        timings, body_bytes = [], 0
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(f"{ctl}/api/v1/history", params={"seconds": 3600})
            timings.append((time.perf_counter() - started) * 1000)
            body_bytes = len(response.content)
            assert response.status_code == 200
        count = len(response.json())
    timings.sort()
    print(
        f"history: {count} records x {size:,} bytes ({args.replicas} replicas) = "
        f"{body_bytes / 1e6:.1f} MB per response"
    )
    print(
        f"GET /api/v1/history?seconds=3600 over {args.requests} requests: "
        f"median {statistics.median(timings):.1f} ms, "
        f"p95 {timings[int(0.95 * (len(timings) - 1))]:.1f} ms, "
        f"max {timings[-1]:.1f} ms (goal: at most 50 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
