"""``surgeguard bench``: the same Locust spike against each admission policy.

One target replica whose capacity is set by its slowest shared dependency (the db:
4 slots x 20 ms). The users read items (every request needs the db), polite and
impatient ones, so the capacity is one number: with the full route mix, closed-loop
users stuck on slow routes shift the mix towards cheap ones whenever a policy sheds,
and "capacity" would depend on the policy. It is measured first, under no limit.
Then each policy gets a freshly started stack (its own target, the controller for
``aimd`` and ``gradient``, an emptied Redis) and the same ``spike`` scenario: a
baseline of half the capacity in users, five times the capacity in users within a
few seconds, held, then the baseline again. The service's own metrics, scraped every
second, are the truth; Locust's numbers are kept as client-side.

Policies: ``none`` (limit 10000, no queue, no controller), ``static`` (the default
limit 64 / queue 128, no controller), ``aimd`` and ``gradient`` (the controller on,
1 s ticks).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import SettingsError
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import compute
from surgeguard_loadtest.keys import LOAD_CLIENT_KEYS
from surgeguard_loadtest.load.options import LoadOptions
from surgeguard_loadtest.load.run import run_load
from surgeguard_loadtest.load.watch import ms_or_none
from surgeguard_loadtest.processes import HOST, child_env, free_port, running
from surgeguard_loadtest.scenarios import build

SLO_S = 0.25
POLICIES = ("none", "static", "aimd", "gradient")
ADMIN_TOKEN = "bench-admin-token-of-24-chars"  # operator tokens are 24 characters or more
SETTLE_S = 5.0  # windows before this (after the spike starts) do not count for the SLO share
SPIKE_FACTOR = 5.0  # the spike's users, in multiples of the capacity (req/s) x 1 s
CAPACITY_USERS = 600  # enough closed-loop users to keep the db saturated (~200 req/s)


@dataclass(frozen=True)
class Plan:
    """Seconds of each part of one policy's run (the spike scenario's own fractions)."""

    capacity_s: float
    run_s: float

    @property
    def phases(self) -> dict[str, float]:
        stages = build("spike", 10, self.run_s).stages
        pre, ramp_end, hold_end = (s.until_s for s in stages[:3])
        return {
            "pre_s": pre,
            "ramp_s": round(ramp_end - pre, 2),
            "spike_s": round(hold_end - pre, 2),
            "post_s": round(self.run_s - hold_end, 2),
        }


FULL = Plan(capacity_s=15, run_s=110)
QUICK = Plan(capacity_s=10, run_s=40)
MIN_RUN_S = 20.0  # the spike's phases then last 4 s, 10 s (5 past SETTLE_S) and 6 s
MIN_CAPACITY_S = 5.0  # the soak's ramp and at least two saturated windows after it


def plan_from(quick: bool, seconds: float | None) -> Plan:
    """The plan for the flags: ``seconds`` (None: the plan's) is each policy's run, and
    the capacity measurement takes a quarter of it, within [MIN_CAPACITY_S, the plan's].
    Raises ``SettingsError`` naming a bad value."""
    plan = QUICK if quick else FULL
    if seconds is None:
        return plan
    if not (math.isfinite(seconds) and MIN_RUN_S <= seconds <= 600):
        raise SettingsError(f"--seconds must be in [{MIN_RUN_S:g}, 600], got {seconds:g}")
    capacity_s = min(plan.capacity_s, max(MIN_CAPACITY_S, seconds / 4))
    return Plan(capacity_s=capacity_s, run_s=seconds)


def target_env(redis_url: str, policy: str) -> dict[str, str]:
    settings = {
        "db_capacity": "4",
        "db_latency_ms": "20",
        "recommendations_capacity": "64",
        "payments_capacity": "64",
        "bulkhead_max_wait_ms": "5000",
        "dependency_timeout_ms": "5000",
        "control_poll_ms": "200",
        "admin_token": ADMIN_TOKEN,
    }
    if policy == "none":
        settings.update(concurrency_limit="10000", queue_limit="0")
    return child_env(redis_url, **settings)


@contextmanager
def stack(policy: str, redis_url: str, logs: Path) -> Iterator[tuple[str, str | None]]:
    """(target URL, controller URL or None), fresh, for the life of the block."""
    env = target_env(redis_url, policy)
    port = free_port()
    url = f"http://{HOST}:{port}"
    with ExitStack() as stack:
        stack.enter_context(
            running(["target", "--port", str(port)], env, f"{url}/healthz", logs / f"{policy}.log")
        )
        controller = None
        if policy in ("aimd", "gradient"):
            cport = free_port()
            controller = f"http://{HOST}:{cport}"
            args = ["controller", "--target", url, "--port", str(cport), "--algorithm", policy]
            stack.enter_context(
                running(args, env, f"{controller}/healthz", logs / f"controller-{policy}.log")
            )
        yield url, controller


def _load(scenario_users: int, seconds: float, name: str, url: str, out: Path, **kw: Any) -> Any:
    scenario = build(name, scenario_users, seconds, **kw)
    opts = LoadOptions(
        scenario=scenario,
        host=url,
        out=out,
        client_keys=",".join(LOAD_CLIENT_KEYS),
        marks=False,
        keep_scrapes=True,
        user_classes=("PoliteReader", "ImpatientReader"),
        slo_p99_ms=SLO_S * 1000,
    )
    return run_load(opts, say=lambda line: print("    " + line, flush=True))


def measure_capacity(redis_url: str, plan: Plan, work: Path) -> float:
    """Admitted requests/s with the route mix and no limit, once saturated: the median
    of the second half's one-second windows."""
    with stack("none", redis_url, work) as (url, _):
        run = _load(CAPACITY_USERS, plan.capacity_s, "soak", url, work / "capacity")
    windows = [w for w in run["windows"] if w["at"] > plan.capacity_s / 2]
    return float(statistics.median(w["admitted_per_s"] for w in windows)) if windows else 0.0


def _nearest(scrapes: Sequence[Scrape], at: float) -> Scrape:
    return min(scrapes, key=lambda s: abs(s.at - at))


def summarize(run: dict[str, Any], plan: Plan, capacity: float, policy: str) -> dict[str, Any]:
    """A policy's row: server-side numbers over the spike (and its recovery)."""
    phases = plan.phases
    pre, spike_s = phases["pre_s"], phases["spike_s"]
    # Every window on the spike's clock: at = 0 is the moment the spike started.
    windows = [{**w, "at": round(w["at"] - pre, 2)} for w in run["windows"]]
    for w in windows:
        w["p99_s"] = None if w["p99_ms"] is None else w["p99_ms"] / 1000
    during = [w for w in windows if 0 < w["at"] <= spike_s]
    judged = [w for w in during if w["at"] > SETTLE_S and w["p99_ms"] is not None]
    within = [w for w in judged if w["p99_ms"] <= SLO_S * 1000]
    before = [w["limit"] for w in windows if w["at"] <= 0]
    limit_before = before[-1] if before else math.nan
    scrapes: list[Scrape] = run["scrapes"]
    start, end = _nearest(scrapes, pre), _nearest(scrapes, pre + spike_s)
    spike = compute("spike", start, end, slo_s=SLO_S)
    settled = compute("settled", _nearest(scrapes, pre + SETTLE_S), end, slo_s=SLO_S)
    recovery = None  # no limit at all, or not back within the run
    limit_min = min((w["limit"] for w in during), default=math.nan)
    if policy != "none" and limit_min >= 0.9 * limit_before:
        recovery = 0.0  # it never left: nothing to recover from
    elif policy != "none":
        after = [w for w in windows if w["at"] > spike_s]
        recovery = next(
            (round(w["at"] - spike_s, 1) for w in after if w["limit"] >= 0.9 * limit_before), None
        )
    return {
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(spike.offered_per_s, 1),
        "goodput_rps": round(spike.good_per_s, 1),
        "goodput_ratio": round(spike.good_per_s / capacity, 3) if capacity else 0.0,
        "p50_ms": ms_or_none(spike.p50_s),
        "p99_ms": ms_or_none(spike.p99_s),
        # The same, from SETTLE_S after the spike's start to its end: what the policy
        # holds once it has had a few seconds to react.
        "p99_ms_settled": ms_or_none(settled.p99_s),
        "slo_window_share": round(len(within) / len(judged), 3) if judged else 0.0,
        "time_to_slo_s": time_to_slo(during),
        "recovery_s": recovery,
        "rejected": {k: round(v * spike.window_s) for k, v in spike.rejected_per_s.items() if v},
        "errors": round(spike.error_rate * spike.admitted_per_s * spike.window_s),
        "limit_before": limit_before,
        "limit_min": limit_min,
        # per phase of the run (seconds on the run's clock, not the spike's) and its
        # verdict against the SLO (loadtest/surgeguard_loadtest/verdict.py)
        "phases": run.get("phases", []),
        "verdicts": run.get("verdicts", []),
        "client_side": {
            **run["client_side"],
            "generator": run["generator"],
            "healthz": run["healthz"],
        },
        "windows": windows,
    }


def time_to_slo(during: Sequence[dict[str, Any]], run_of: int = 5) -> float | None:
    """Seconds from the spike's start to the first of ``run_of`` windows in a row whose
    admitted p99 is within the SLO (None: never)."""
    ok = [w["p99_ms"] is not None and w["p99_ms"] <= SLO_S * 1000 for w in during]
    for i in range(len(during) - run_of + 1):
        if all(ok[i : i + run_of]):
            began = float(during[i]["at"]) - 1.0  # the window's end, less its second
            return round(max(0.0, began), 1)
    return None


def bench(policies: Sequence[str], plan: Plan, work: Path) -> dict[str, Any]:
    with EmbeddedRedis(data_dir=work / "redis") as server:
        capacity = measure_capacity(server.url, plan, work)
        users = max(2, round(capacity * SPIKE_FACTOR))
        baseline = max(1, round(capacity * 0.5))
        print(
            f"capacity: {capacity:.0f} admitted requests/s (db-bound); the spike: "
            f"{baseline} -> {users} users",
            flush=True,
        )
        results = {}
        flush = redis.Redis.from_url(server.url)
        try:
            for policy in policies:
                flush.flushall()
                print(f"policy {policy}:", flush=True)
                with stack(policy, server.url, work) as (url, _):
                    run = _load(
                        users, plan.run_s, "spike", url, work / policy, baseline_users=baseline
                    )
                results[policy] = summarize(run, plan, capacity, policy)
        finally:
            flush.close()
    return {
        "scenario": "spike",
        "slo_p99_ms": SLO_S * 1000,
        "capacity_rps": round(capacity, 1),
        "users": {"baseline": baseline, "spike": users},
        "phases": plan.phases | {"run_s": plan.run_s, "capacity_s": plan.capacity_s},
        "policies": results,
    }


def parse_policies(raw: str) -> list[str]:
    policies = [p.strip() for p in raw.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise SettingsError(
            f"unknown policy {unknown[0] if unknown else '(none given)'}: "
            f"choose from {', '.join(POLICIES)}"
        )
    return policies


def run_bench_command(args: argparse.Namespace) -> int:
    if args.scenario != "spike":
        raise SettingsError(f"only the spike scenario is benchmarked, not {args.scenario!r}")
    policies = parse_policies(args.policies)
    plan = plan_from(args.quick, args.seconds)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="surgeguard-bench-") as work:
        report = bench(policies, plan, Path(work))
    report["command"] = "surgeguard bench " + " ".join(sys.argv[2:])
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2, default=_json_default))
    from surgeguard_loadtest.bench.spike_report import (
        write_report,  # plotting only once there is data
    )

    written = write_report(json.loads((args.out / "summary.json").read_text()), args.out)
    print(table(report))
    print(verdicts(report))
    print(f"written: {args.out / 'summary.json'}, " + ", ".join(str(p) for p in written))
    return 0


def table(report: dict[str, Any]) -> str:
    head = (
        f"{'policy':>9} {'goodput/s':>10} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'SLO share':>9} {'to SLO s':>8} {'recover s':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, r in report["policies"].items():
        lines.append(
            f"{name:>9} {r['goodput_rps']:>10.1f} {r['goodput_ratio']:>6.2f} "
            f"{_cell(r['p50_ms']):>7} {_cell(r['p99_ms']):>8} {r['slo_window_share']:>9.2f} "
            f"{_cell(r['time_to_slo_s']):>8} {_cell(r['recovery_s']):>9}"
        )
    return "\n".join(lines)


def verdicts(report: dict[str, Any]) -> str:
    """One line per policy and phase: SURVIVED / DEGRADED / FAILED against the SLO."""
    lines = [f"verdicts against the SLO (admitted p99 <= {report['slo_p99_ms']:g} ms):"]
    for name, r in report["policies"].items():
        lines += [f"  {name}: {v['line']}" for v in r.get("verdicts", [])]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)
