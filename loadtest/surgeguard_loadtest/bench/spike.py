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

Policies (``policies.py``): ``none`` (limit 10000, no queue, no controller), ``static``
(the default limit 64 / queue 128), ``static-best`` (the best static limit of a short
sweep on the same stack first, ``static_best.py``), ``aimd`` and ``gradient`` (the
controller on, 1 s ticks), ``inner`` (surgeguard's in-process loop under its
controller) and the in-process peers ``envoy``, ``vegas``, ``netflix-aimd`` and
``gradient2``. The shape (``--shape``, ``shapes.py``) may instead be a square wave or
a dependency that drifts slower; their rows are ``shape_rows.py``'s.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import SettingsError
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import compute
from surgeguard_loadtest.bench import columns, ratios, static_best
from surgeguard_loadtest.bench.policies import POLICIES as CATALOGUE
from surgeguard_loadtest.bench.policies import parse_policies as parse_policies  # re-exported
from surgeguard_loadtest.bench.policies import replica_settings
from surgeguard_loadtest.bench.shape_rows import drift_row, square_row, with_enforced_limits
from surgeguard_loadtest.bench.shapes import (
    SPIKE_FACTOR,
    ShapePlan,
    check_factor,
    check_shape,
    plan_shape,
)
from surgeguard_loadtest.bench.timeline import Plane, Timeline
from surgeguard_loadtest.keys import LOAD_CLIENT_KEYS
from surgeguard_loadtest.load.options import LoadOptions
from surgeguard_loadtest.load.run import run_load
from surgeguard_loadtest.load.watch import ms_or_none
from surgeguard_loadtest.processes import HOST, child_env, free_port, running
from surgeguard_loadtest.scenarios import SQUARE_PRE_S, build

SLO_S = 0.25
POLICIES = tuple(CATALOGUE)
ADMIN_TOKEN = "bench-admin-token-of-24-chars"  # operator tokens are 24 characters or more
SETTLE_S = 5.0  # windows before this (after the spike starts) do not count for the SLO share
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


def target_env(redis_url: str, policy_settings: Mapping[str, str]) -> dict[str, str]:
    """The target's environment: the benchmark's stack, then the policy's settings."""
    settings = {
        "db_capacity": "4",
        "db_latency_ms": "20",
        "recommendations_capacity": "64",
        "payments_capacity": "64",
        "bulkhead_max_wait_ms": "5000",
        "dependency_timeout_ms": "5000",
        "control_poll_ms": "200",
        "admin_token": ADMIN_TOKEN,
        **policy_settings,
    }
    return child_env(redis_url, **settings)


@contextmanager
def stack(
    policy: str,
    redis_url: str,
    logs: Path,
    tuned_limit: int | None = None,
    label: str | None = None,
) -> Iterator[tuple[str, str | None]]:
    """(target URL, controller URL or None), fresh, for the life of the block.
    ``tuned_limit``: the sweep's limit for ``static-best``; ``label``: the logs' name
    (default the policy's)."""
    spec = CATALOGUE[policy]
    env = target_env(redis_url, replica_settings(spec, tuned_limit))
    label = label or policy
    port = free_port()
    url = f"http://{HOST}:{port}"
    with ExitStack() as stack:
        stack.enter_context(
            running(["target", "--port", str(port)], env, f"{url}/healthz", logs / f"{label}.log")
        )
        controller = None
        if spec.controller is not None:
            cport = free_port()
            controller = f"http://{HOST}:{cport}"
            args = ["controller", "--target", url, "--port", str(cport)]
            args += ["--algorithm", spec.controller]
            stack.enter_context(
                running(args, env, f"{controller}/healthz", logs / f"controller-{label}.log")
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
    # Every window on the spike's clock: at = 0 is the moment the spike started; the
    # limit is the one enforced (an inner loop's, where the replica has one).
    enforced = with_enforced_limits(run["windows"], run["scrapes"])
    windows = [{**w, "at": round(w["at"] - pre, 2)} for w in enforced]
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


def tune_static(redis_url: str, shape: ShapePlan, quick: bool, work: Path) -> dict[str, Any]:
    """The ``static-best`` limit: a sweep under the shape's heaviest load."""
    limits = static_best.QUICK_LIMITS if quick else static_best.LIMITS
    step_s = 4.0 if quick else 6.0
    with stack("static-best", redis_url, work, limits[0], label="static-best-sweep") as (url, _):
        return static_best.sweep(
            redis_url,
            limits,
            step_s,
            lambda seconds: _load(shape.users, seconds, "soak", url, work / "sweep"),
            SLO_S * 1000,
        )


def run_drift(shape: ShapePlan, redis_url: str, url: str, out: Path) -> tuple[Any, float, float]:
    """The drift's load run, the db slowed on its timeline meanwhile; returns the run
    and when (seconds on its clock) the db began to slow and was back to normal."""
    assert shape.drift is not None
    plane = Plane(redis_url)
    steps = shape.drift.steps()
    timeline = Timeline([(at, partial(plane.set_latency, "db", m)) for at, m in steps])
    timeline.start()
    try:
        run = _load(shape.users, shape.run_s, "soak", url, out)
    finally:
        timeline.stop()
        plane.set_latency("db", 1.0)  # whatever happened: the next stack starts calm
    zero = run["started_at"] + run.get("locust_started_after_s", 0.0)  # Locust's t = 0
    at = {index: wall - zero for wall, index, ok in timeline.done if ok}
    planned_lead = 2.0  # the timeline starts about this long before Locust does
    drift_at = at.get(0, steps[0][0] - planned_lead)
    recovered_at = at.get(len(steps) - 1, steps[-1][0] - planned_lead)
    return run, round(drift_at, 2), round(recovered_at, 2)


def bench(
    policies: Sequence[str],
    plan: Plan,
    work: Path,
    *,
    shape_name: str = "spike",
    factor: float = SPIKE_FACTOR,
    quick: bool = False,
) -> dict[str, Any]:
    with EmbeddedRedis(data_dir=work / "redis") as server:
        capacity = measure_capacity(server.url, plan, work)
        shape = plan_shape(shape_name, capacity, plan.run_s, quick, factor)
        print(
            f"capacity: {capacity:.0f} admitted requests/s (db-bound); the {shape_name}: "
            f"{shape.baseline} -> {shape.users} users",
            flush=True,
        )
        tuned = None
        if any(CATALOGUE[p].tuned for p in policies):
            tuned = tune_static(server.url, shape, quick, work)
            print(f"static-best: limit {tuned['limit']} of {tuned['steps']}", flush=True)
            if tuned["limit"] is None:
                raise RuntimeError("the static sweep measured no settled window")
        results = {}
        flush = redis.Redis.from_url(server.url)
        try:
            for policy in policies:
                flush.flushall()  # a fresh control plane: no knobs, no chaos
                print(f"policy {policy}:", flush=True)
                limit = tuned["limit"] if tuned else None
                with stack(policy, server.url, work, limit) as (url, _):
                    out = work / policy
                    if shape.drift is not None:
                        run, drift_at, back_at = run_drift(shape, server.url, url, out)
                        row = drift_row(run, capacity, SLO_S, drift_at, back_at)
                    else:
                        run = _load(
                            shape.users, shape.run_s, shape.scenario, url, out,
                            baseline_users=shape.baseline,
                        )  # fmt: skip
                        row = (
                            square_row(run, shape, capacity, SLO_S)
                            if shape.shape == "square"
                            else summarize(run, plan, capacity, policy)
                        )
                if policy == "none" and shape.drift is not None:
                    row["recovery_s"] = None  # no limit to recover
                row["surgeguard"] = CATALOGUE[policy].surgeguard
                if CATALOGUE[policy].tuned and tuned:
                    row["tuned_limit"] = tuned["limit"]
                results[policy] = row
        finally:
            flush.close()
    return {
        "scenario": shape_name,
        "shape": shape_name,
        "factor": factor if shape_name == "spike" else None,
        "slo_p99_ms": SLO_S * 1000,
        "capacity_rps": round(capacity, 1),
        "users": {"baseline": shape.baseline, "spike": shape.users},
        "phases": _phases(shape, plan),
        "static_sweep": tuned,
        "policies": results,
    }


def _phases(shape: ShapePlan, plan: Plan) -> dict[str, Any]:
    """The run's parts, seconds, for the report (and the plots' shading)."""
    common = {"run_s": shape.run_s, "capacity_s": plan.capacity_s}
    if shape.shape == "spike":
        return plan.phases | common
    if shape.drift is not None:
        return common | {"pre_s": shape.drift.pre_s, "drift_s": shape.drift.ramp_s}
    return common | {"pre_s": SQUARE_PRE_S}


def run_bench_command(args: argparse.Namespace) -> int:
    if args.scenario != "spike":
        raise SettingsError(f"only the spike scenario is benchmarked, not {args.scenario!r}")
    policies = parse_policies(args.policies)
    plan = plan_from(args.quick, args.seconds)
    shape = check_shape(args.shape or "spike")
    factor = check_factor(args.factor, shape)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="surgeguard-bench-") as work:
        report = bench(
            policies, plan, Path(work), shape_name=shape, factor=factor, quick=args.quick
        )
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
    """The shape's columns (``columns.py``), one line per policy; for the spike, the
    ratios of surgeguard's policies to the best peer after it."""
    cols = columns.for_shape(report.get("shape"))
    widths = [max(9, len(head)) for head, _, _ in cols]
    head = f"{'policy':>12} " + " ".join(
        f"{h:>{n}}" for (h, _, _), n in zip(cols, widths, strict=True)
    )
    lines = [head, "-" * len(head)]
    for name, r in report["policies"].items():
        cells = [_cell(r.get(field), spec) for _, field, spec in cols]
        lines.append(
            f"{name:>12} " + " ".join(f"{c:>{n}}" for c, n in zip(cells, widths, strict=True))
        )
    if report.get("shape", "spike") == "spike" and (found := ratio_lines(report["policies"])):
        lines += ["", "surgeguard over the best peer per column (x1.00 = as good):", *found]
    return "\n".join(lines)


def ratio_lines(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ratio table as plain text: the best peers, then each surgeguard policy."""
    best = ratios.best_peers(rows)
    found = ratios.ratios(rows)
    if not found or all(b is None for b in best.values()):
        return []
    lines = []
    for heading, field, _ in ratios.COLUMNS:
        b = best[field]
        peer = f"{b[0]} {b[1]:g}" if b else "-"
        ours = ", ".join(
            f"{name} {_cell(rows[name].get(field), 'g')} (x{r:.2f})"
            if (r := found[name][field]) is not None
            else f"{name} {_cell(rows[name].get(field), 'g')}"
            for name in found
        )
        lines.append(f"  {heading}: best peer {peer}; {ours}")
    return lines


def verdicts(report: dict[str, Any]) -> str:
    """One line per policy and phase: SURVIVED / DEGRADED / FAILED against the SLO."""
    lines = [f"verdicts against the SLO (admitted p99 <= {report['slo_p99_ms']:g} ms):"]
    for name, r in report["policies"].items():
        lines += [f"  {name}: {v['line']}" for v in r.get("verdicts", [])]
    return "\n".join(lines)


def _cell(value: Any, spec: str = "g") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return format(value, spec)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)
