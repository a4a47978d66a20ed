"""Benchmark: does the controller keep admitted latency inside the SLO at 5x capacity?

One target replica whose capacity is db-bound (4 db slots x 20 ms; requests wait for
a db slot the way they wait for a pooled connection). Its capacity is measured first
(closed loop, no limit). Then each policy gets a freshly started stack and the same
open-loop load: baseline (half the capacity), a spike (five times the capacity),
baseline again. The server's own metrics, scraped every second, are the truth.

    python -m loadtest.bench_controller [--quick] [--policies none,static,aimd,gradient]

Policies: ``none`` (limit 10000, no queue, no controller), ``static`` (the default
limit 64 / queue 128, no controller), ``aimd`` and ``gradient`` (the controller on,
1 s ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from controller.quantile import bucket_deltas, histogram_quantile
from controller.scrape import Scrape
from controller.signals import compute
from loadtest.processes import HOST, child_env, free_port, running
from loadtest.rawhttp import closed_loop, open_loop
from surgeguard.embedded_redis import EmbeddedRedis

SLO_S = 0.25
KEYS = [f"bench-{n}" for n in range(20)]
HIST = "surgeguard_request_duration_seconds"
POLICIES = ("none", "static", "aimd", "gradient")
SETTLE_S = 5.0  # windows before this (after the spike starts) do not count for the SLO share


@dataclass(frozen=True)
class Phases:
    capacity_s: float
    pre_s: float
    spike_s: float
    post_s: float


FULL = Phases(capacity_s=6, pre_s=10, spike_s=60, post_s=30)
QUICK = Phases(capacity_s=4, pre_s=5, spike_s=20, post_s=15)


@dataclass
class Window:
    """One second as the server saw it; ``at`` is seconds since the spike started."""

    at: float
    p99_s: float
    admitted_per_s: float
    good_per_s: float
    limit: float
    rejected_per_s: float


@dataclass
class PolicyResult:
    capacity_rps: float
    offered_rps: float
    goodput_rps: float
    goodput_ratio: float
    p50_ms: float | None
    p99_ms: float | None
    slo_window_share: float
    time_to_slo_s: float | None
    recovery_s: float | None  # None: no limit, or not back within the post-spike phase
    rejected: dict[str, float]
    errors: float
    limit_before: float
    limit_min: float
    client_side: dict[str, Any] = field(default_factory=dict)
    windows: list[dict[str, float | None]] = field(default_factory=list)


def target_env(redis_url: str, policy: str) -> dict[str, str]:
    settings = {
        "db_capacity": "4",
        "db_latency_ms": "20",
        "bulkhead_max_wait_ms": "5000",
        "dependency_timeout_ms": "5000",
        "client_keys": ",".join(KEYS),
        "control_poll_ms": "200",
        "admin_token": "bench",
    }
    if policy == "none":
        settings.update(concurrency_limit="10000", queue_limit="0")
    return child_env(redis_url, **settings)


def scrape(url: str) -> Scrape:
    return Scrape.from_text(httpx.get(f"{url}/metrics", timeout=5).text, time.monotonic())


def item_path() -> str:
    return f"/items/{random.randint(1, 100_000)}"


def key_for(number: int) -> dict[str, str]:
    return {"X-Api-Key": KEYS[number % len(KEYS)]}


async def measure_capacity(url: str, seconds: float) -> float:
    """Admitted requests/s with 64 closed-loop clients and no limit: the db's ceiling."""
    await closed_loop(url, 64, 1.0, item_path, headers=key_for)  # warm up
    before = await asyncio.to_thread(scrape, url)
    await closed_loop(url, 64, seconds, item_path, headers=key_for)
    after = await asyncio.to_thread(scrape, url)
    return compute("capacity", before, after, slo_s=SLO_S).admitted_per_s


async def sample(url: str, origin: list[float], out: list[Window], stop: asyncio.Event) -> None:
    before = await asyncio.to_thread(scrape, url)
    while not stop.is_set():
        await asyncio.sleep(1.0)
        now = await asyncio.to_thread(scrape, url)
        s = compute("bench", before, now, slo_s=SLO_S)
        out.append(
            Window(
                now.at - origin[0],
                s.p99_s,
                s.admitted_per_s,
                s.good_per_s,
                s.concurrency_limit,
                s.rejected_total_per_s,
            )
        )
        before = now


async def drive(url: str, capacity: float, phases: Phases) -> dict[str, Any]:
    """Baseline, spike, baseline; returns scrapes around the spike and client counts."""
    origin = [math.inf]
    windows: list[Window] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(url, origin, windows, stop))
    await open_loop(url, capacity * 0.5, phases.pre_s, item_path, headers=key_for)
    spike_start = await asyncio.to_thread(scrape, url)
    origin[0] = spike_start.at
    report, skipped = await open_loop(url, capacity * 5, phases.spike_s, item_path, headers=key_for)
    spike_end = await asyncio.to_thread(scrape, url)
    await open_loop(url, capacity * 0.5, phases.post_s, item_path, headers=key_for)
    stop.set()
    await sampler
    return {
        "windows": windows,
        "spike_start": spike_start,
        "spike_end": spike_end,
        "statuses": report.statuses(),
        "skipped": skipped,
        "spike_s": phases.spike_s,
        "sent": len(report.results),
    }


def summarize(run: dict[str, Any], capacity: float, policy: str) -> PolicyResult:
    windows: list[Window] = run["windows"]
    spike_s: float = run["spike_s"]
    start, end = run["spike_start"], run["spike_end"]
    spike = compute("spike", start, end, slo_s=SLO_S)
    during = [w for w in windows if 0 < w.at <= spike_s]
    judged = [w for w in during if w.at > SETTLE_S and not math.isnan(w.p99_s)]
    within = [w for w in judged if w.p99_s <= SLO_S]
    before = [w.limit for w in windows if w.at <= 0]
    limit_before = before[-1] if before else math.nan
    buckets = bucket_deltas(end.buckets(HIST), start.buckets(HIST))
    has_limit = policy != "none"
    recovery = None
    if has_limit:
        after = [w for w in windows if w.at > spike_s]
        recovery = next(
            (round(w.at - spike_s, 1) for w in after if w.limit >= 0.9 * limit_before), None
        )
    return PolicyResult(
        capacity_rps=round(capacity, 1),
        offered_rps=round(capacity * 5, 1),
        goodput_rps=round(spike.good_per_s, 1),
        goodput_ratio=round(spike.good_per_s / capacity, 3) if capacity else 0.0,
        p50_ms=_ms(histogram_quantile(0.5, buckets)),
        p99_ms=_ms(histogram_quantile(0.99, buckets)),
        slo_window_share=round(len(within) / len(judged), 3) if judged else 0.0,
        time_to_slo_s=_time_to_slo(during),
        recovery_s=recovery,
        rejected={k: round(v * spike.window_s) for k, v in spike.rejected_per_s.items() if v},
        errors=round(spike.error_rate * spike.admitted_per_s * spike.window_s),
        limit_before=limit_before,
        limit_min=min((w.limit for w in during), default=math.nan),
        client_side={
            "statuses": run["statuses"],
            "sent": run["sent"],
            "generator_skipped": run["skipped"],
            "note": "client-side counts; the server's metrics are the truth",
        },
        windows=[
            {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(w).items()
            }
            for w in windows
        ],
    )


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


def _time_to_slo(during: Sequence[Window], run_of: int = 5) -> float | None:
    """Seconds from the spike's start to the first of ``run_of`` windows in a row
    whose admitted p99 is within the SLO."""
    for i in range(len(during) - run_of + 1):
        if all(not math.isnan(w.p99_s) and w.p99_s <= SLO_S for w in during[i : i + run_of]):
            return round(max(0.0, during[i].at - 1.0), 1)  # the window began 1 s earlier
    return None


async def run_policy(
    policy: str, redis_url: str, phases: Phases, capacity: float, logs: Path
) -> PolicyResult:
    env = target_env(redis_url, policy)
    port = free_port()
    url = f"http://{HOST}:{port}"
    with running(
        ["target", "--port", str(port)], env, f"{url}/healthz", logs / f"target-{policy}.log"
    ):
        if policy in ("aimd", "gradient"):
            cport = free_port()
            with running(
                ["controller", "--target", url, "--port", str(cport), "--algorithm", policy],
                env,
                f"http://{HOST}:{cport}/healthz",
                logs / f"controller-{policy}.log",
            ):
                run = await drive(url, capacity, phases)
        else:
            run = await drive(url, capacity, phases)
    return summarize(run, capacity, policy)


async def bench(policies: Sequence[str], phases: Phases, logs: Path) -> dict[str, Any]:
    with EmbeddedRedis(data_dir=logs / "redis") as server:
        flush = redis.Redis.from_url(server.url)
        port = free_port()
        url = f"http://{HOST}:{port}"
        with running(
            ["target", "--port", str(port)],
            target_env(server.url, "none"),
            f"{url}/healthz",
            logs / "target-capacity.log",
        ):
            capacity = await measure_capacity(url, phases.capacity_s)
        print(f"capacity: {capacity:.0f} admitted requests/s (db-bound)", flush=True)
        results = {}
        for policy in policies:
            flush.flushall()
            print(
                f"policy {policy}: baseline {phases.pre_s:g} s, spike {phases.spike_s:g} s "
                f"at {capacity * 5:.0f} req/s, baseline {phases.post_s:g} s",
                flush=True,
            )
            results[policy] = await run_policy(policy, server.url, phases, capacity, logs)
        flush.close()
    return {
        "scenario": "spike",
        "slo_p99_ms": SLO_S * 1000,
        "capacity_rps": round(capacity, 1),
        "phases": asdict(phases),
        "policies": {p: asdict(r) for p, r in results.items()},
    }


def table(report: dict[str, Any]) -> str:
    head = (
        f"{'policy':>9} {'goodput/s':>10} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'SLO share':>9} {'to SLO s':>8} {'recover s':>9} {'limit':>11}"
    )
    lines = [head, "-" * len(head)]
    for name, r in report["policies"].items():
        lines.append(
            f"{name:>9} {r['goodput_rps']:>10.1f} {r['goodput_ratio']:>6.2f} "
            f"{_cell(r['p50_ms']):>7} {_cell(r['p99_ms']):>8} {r['slo_window_share']:>9.2f} "
            f"{_cell(r['time_to_slo_s']):>8} {_cell(r['recovery_s']):>9} "
            f"{_cell(r['limit_before'])}->{_cell(r['limit_min'])}".rjust(11)
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:g}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_controller", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="20 s spike instead of 60 s")
    parser.add_argument(
        "--policies",
        default="none,static,aimd",
        help=f"comma-separated, from {', '.join(POLICIES)}",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/controller.json"))
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        parser.error(
            f"unknown policy {unknown[0] if unknown else '(none given)'}: "
            f"choose from {', '.join(POLICIES)}"
        )
    with tempfile.TemporaryDirectory(prefix="surgeguard-bench-") as work:
        report = asyncio.run(bench(policies, QUICK if args.quick else FULL, Path(work)))
    report["command"] = " ".join(
        [
            os.path.basename(sys.executable),
            "-m",
            "loadtest.bench_controller",
            *(argv or sys.argv[1:]),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_json_default))
    print(table(report))
    print(f"report: {args.out}")
    return 0


def _json_default(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
