"""``surgeguard bench --scenario shared-db``: the article's first lesson, measured.

One real Postgres (embedded) whose capacity is fixed: ``LANES`` queries at once, each
holding its lane for ``LATENCY_MS`` (see ``surgeguard_target_app.db``), and
``max_connections`` set to what it honours. The same spike goes to 1, 2 and 3
replicas of the demo on that one database, once with the budget (``SURGEGUARD_BUDGETS
=db:<lanes>``: the controller divides the lanes among the replicas) and once without
(each replica's ``bulkhead.db`` started at the database's whole capacity, right for
one replica, and tuned alone, as before the budget). Adding replicas adds compute, not
database.

The database's capacity is measured first, straight against Postgres (no replica in
the way): the lanes kept busy by a closed loop of clients for a few seconds, in
queries per second. Every configuration then gets a fresh set of replicas (and a
controller, discovering them), an open-loop load of ``BASELINE`` x capacity split
evenly over the replicas, then the spike at ``SPIKE`` x capacity, then the baseline
again. Requests read one item each (``GET /items/{id}``, one db query when the cache
misses; the cache is off so that every request needs the database).

The truth is the replicas' own metrics, scraped every second: goodput (admitted,
no 5xx, within the SLO) summed over the replicas, admitted p99 over all of them, and
the sum of their enforced ``bulkhead.db`` limits, the figure the budget bounds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import redis

from surgeguard import metric_names as names
from surgeguard.settings import SettingsError
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import aggregate
from surgeguard_loadtest.keys import LOAD_CLIENT_KEYS
from surgeguard_loadtest.load.watch import ms_or_none
from surgeguard_loadtest.processes import HOST, child_env, free_port, running
from surgeguard_loadtest.rawhttp import LoadReport, open_loop

SLO_S = 0.25
ADMIN_TOKEN = "bench-admin-token-of-24-chars"
ITEMS = 100_000
SETTLE_S = 5.0  # spike windows before this do not count (the controller's reaction)


@dataclass(frozen=True)
class Plan:
    """What one configuration's run is made of: seconds of each phase, the load in
    multiples of the database's capacity, the database's own shape."""

    lanes: int = 8  # queries Postgres serves at once (its budget)
    latency_ms: float = 50.0  # each query's work, ms (pg_sleep on a locked lane)
    baseline_s: float = 10.0
    spike_s: float = 30.0
    after_s: float = 10.0
    baseline: float = 0.5  # offered load before and after, x capacity
    spike: float = 3.0  # offered load during the spike, x capacity
    replicas: tuple[int, ...] = (1, 2, 3)
    budgets: tuple[bool, ...] = (True, False)

    @property
    def run_s(self) -> float:
        return self.baseline_s + self.spike_s + self.after_s


FULL = Plan()
QUICK = Plan(baseline_s=5.0, spike_s=20.0, after_s=5.0)


@dataclass
class Run:
    """What one configuration recorded: every replica's scrapes and the client's view."""

    replicas: int
    budget: bool
    spike_start: float = 0.0  # monotonic seconds
    spike_end: float = 0.0
    scrapes: dict[str, list[Scrape]] = field(default_factory=dict)  # replica URL -> scrapes
    client: LoadReport = field(default_factory=LoadReport)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # the controller's, newest last


def _decisions(controller: str) -> list[dict[str, Any]]:
    """The controller's recorded moves (with their reasons) for the run's report."""
    try:
        response = httpx.get(f"{controller}/api/v1/decisions", timeout=5.0, trust_env=False)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return []
    items = body.get("decisions", body) if isinstance(body, dict) else body
    return list(items)[-200:] if isinstance(items, list) else []


def replica_env(redis_url: str, database_url: str, plan: Plan, budget: bool) -> dict[str, str]:
    settings = {
        "database_url": database_url,
        "db_capacity": str(plan.lanes),
        "db_latency_ms": f"{plan.latency_ms:g}",
        "cache_capacity": "64",
        "recommendations_capacity": "64",
        "payments_capacity": "64",
        "control_poll_ms": "200",
        "slo_p99_ms": f"{SLO_S * 1000:g}",
        "admin_token": ADMIN_TOKEN,
        "client_keys": ",".join(f"{k}:critical" for k in LOAD_CLIENT_KEYS),
    }
    if budget:
        settings["budgets"] = f"db:{plan.lanes}"
    return child_env(redis_url, **settings)


@contextmanager
def fleet(count: int, env: dict[str, str], logs: Path, tag: str) -> Iterator[tuple[list[str], str]]:
    """``count`` fresh replicas, each announcing itself, and one controller that
    discovers them; the replicas' URLs."""
    with ExitStack() as stack:
        urls = []
        for n in range(count):
            port = free_port()
            url = f"http://{HOST}:{port}"
            own = {**env, "SURGEGUARD_ADVERTISE_URL": url, "SURGEGUARD_REPLICA_ID": f"r{n + 1}"}
            stack.enter_context(
                running(
                    ["target", "--port", str(port)],
                    own,
                    f"{url}/readyz",
                    logs / f"{tag}-r{n + 1}.log",
                )
            )
            urls.append(url)
        cport = free_port()
        controller = f"http://{HOST}:{cport}"
        # No --target: the controller tunes the replicas that announce themselves.
        args = ["controller", "--port", str(cport)]
        stack.enter_context(
            running(args, env, f"{controller}/healthz", logs / f"{tag}-controller.log")
        )
        yield urls, controller


def size_for_one(controller: str, slots: int) -> None:
    """Without a budget, start every replica's ``bulkhead.db`` at the database's whole
    capacity (unpinned: the controller tunes each replica alone from there), as an
    operator sizing the pool for one replica would. Retried until the controller has
    read the replicas' declarations (it refuses a knob no replica has declared)."""
    deadline = time.monotonic() + 20.0
    body = {"value": slots, "pin": False, "reason": "sized for one replica"}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    while True:
        response = httpx.put(
            f"{controller}/api/v1/knobs/bulkhead.db",
            json=body,
            headers=headers,
            timeout=5.0,
            trust_env=False,
        )
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"could not size bulkhead.db: {response.status_code} {response.text}"
            )
        time.sleep(0.5)


async def _scrape_every_second(urls: Sequence[str], into: Run, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        while not stop.is_set():

            async def one(url: str) -> None:
                try:
                    response = await http.get(f"{url}/metrics")
                except httpx.HTTPError:
                    return
                into.scrapes.setdefault(url, []).append(
                    Scrape.from_text(response.text, time.monotonic())
                )

            await asyncio.gather(*(one(u) for u in urls))
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


async def _drive(urls: Sequence[str], plan: Plan, capacity: float, into: Run) -> None:
    """Open-loop arrivals split evenly over the replicas: baseline, spike, baseline."""
    rng = random.Random(7)

    def path() -> str:
        return f"/items/{rng.randint(1, ITEMS)}"

    def headers(number: int) -> dict[str, str]:
        return {"X-Api-Key": LOAD_CLIENT_KEYS[number % len(LOAD_CLIENT_KEYS)]}

    stop = asyncio.Event()
    scraper = asyncio.create_task(_scrape_every_second(urls, into, stop))
    share = 1.0 / len(urls)
    for phase, seconds, factor in (
        ("baseline", plan.baseline_s, plan.baseline),
        ("spike", plan.spike_s, plan.spike),
        ("after", plan.after_s, plan.baseline),
    ):
        if phase == "spike":
            into.spike_start = time.monotonic()
        rate = capacity * factor * share
        await asyncio.gather(
            *(open_loop(u, rate, seconds, path, headers=headers, report=into.client) for u in urls)
        )
        if phase == "spike":
            into.spike_end = time.monotonic()
    stop.set()
    await scraper


def db_limit_sum(run: Run) -> list[float]:
    """The sum of the replicas' enforced ``bulkhead.db`` limits at each scrape round."""
    rounds = zip(*(run.scrapes[u] for u in sorted(run.scrapes)), strict=False)
    return [
        sum(s.total(names.DEPENDENCY_LIMIT, dependency="db") for s in round_) for round_ in rounds
    ]


def windows(run: Run) -> list[dict[str, Any]]:
    """Second by second on the spike's clock (0 = the spike starts): goodput and
    admitted p99 over all replicas, and the sums of their limits."""
    rounds = list(zip(*(run.scrapes[u] for u in sorted(run.scrapes)), strict=False))
    out = []
    for before, now in itertools.pairwise(rounds):
        total = aggregate(list(zip(before, now, strict=True)), slo_s=SLO_S)
        out.append(
            {
                "at": round(now[0].at - run.spike_start, 1),
                "good_per_s": round(total.good_per_s, 1),
                "admitted_per_s": round(total.admitted_per_s, 1),
                "p99_ms": ms_or_none(total.p99_s),
                "concurrency_limit": sum(s.total(names.CONCURRENCY_LIMIT) for s in now),
                "db_slots": sum(s.total(names.DEPENDENCY_LIMIT, dependency="db") for s in now),
                "db_in_flight": sum(
                    s.total(names.DEPENDENCY_INFLIGHT, dependency="db") for s in now
                ),
            }
        )
    return out


def summarize(run: Run, capacity: float, plan: Plan) -> dict[str, Any]:
    """One configuration's row, from the spike's settled part (``SETTLE_S`` on)."""
    start, end = run.spike_start + SETTLE_S, run.spike_end
    pairs = []
    for scrapes in run.scrapes.values():
        inside = [s for s in scrapes if start <= s.at <= end]
        if len(inside) >= 2:
            pairs.append((inside[0], inside[-1]))
    settled = aggregate(pairs, slo_s=SLO_S) if pairs else None
    statuses = LoadReport(
        [r for r in run.client.results if run.spike_start <= r.started <= run.spike_end]
    ).statuses()
    sums = db_limit_sum(run)
    goodput = settled.good_per_s if settled else 0.0
    return {
        "replicas": run.replicas,
        "budget": run.budget,
        "capacity_qps": round(capacity, 1),
        "goodput_rps": round(goodput, 1),
        "goodput_ratio": round(goodput / capacity, 3) if capacity else 0.0,
        "p99_ms": ms_or_none(settled.p99_s) if settled else None,
        "error_rate": round(settled.error_rate, 4) if settled else None,
        "db_limit_sum_max": max(sums) if sums else None,
        "db_limit_sum_median": statistics.median(sums) if sums else None,
        "client_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "budget_total": plan.lanes if run.budget else None,
        "windows": windows(run),
        "decisions": run.decisions,
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'replicas':>8} {'budget':>6} {'goodput/s':>9} {'x capacity':>10} {'p99 ms':>7} "
        f"{'5xx share':>9} {'max sum db slots':>16}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['replicas']:>8} {'on' if r['budget'] else 'off':>6} {r['goodput_rps']:>9.1f} "
            f"{r['goodput_ratio']:>10.2f} {_cell(r['p99_ms']):>7} {_cell(r['error_rate']):>9} "
            f"{_cell(r['db_limit_sum_max']):>16}"
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_counts(raw: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise SettingsError(
            f"--replicas must be comma-separated counts like 1,2,3, got {raw!r}"
        ) from None
    if not counts or any(not 1 <= c <= 8 for c in counts):
        raise SettingsError(f"--replicas: each count must be in [1, 8], got {raw!r}")
    return counts


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)


# -- the database's own capacity ---------------------------------------------------------


async def _db_capacity(url: str, lanes: int, latency_s: float, seconds: float) -> float:
    """Lane calls per second Postgres completes with ``lanes`` clients kept busy (no
    replica in the way), after the schema is made."""
    import asyncpg  # the demo extra's driver: only this benchmark needs it here

    from surgeguard_target_app.db.schema import HOLD_LANE_CALL, ensure_schema

    first = await asyncpg.connect(url)
    try:
        await ensure_schema(first, lanes)
    finally:
        await first.close()
    connections = [await asyncpg.connect(url) for _ in range(lanes)]
    done = 0
    stop_at = time.monotonic() + seconds

    async def client(conn: Any) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            async with conn.transaction():
                await conn.execute(HOLD_LANE_CALL, latency_s, False, False)
            done += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for conn in connections:
            await conn.close()
    return done / (time.monotonic() - started)


# -- the whole benchmark -----------------------------------------------------------------


def bench(plan: Plan, work: Path) -> dict[str, Any]:
    from surgeguard.runtime.embedded_postgres import EmbeddedPostgres
    from surgeguard.runtime.embedded_redis import EmbeddedRedis

    with (
        EmbeddedRedis(data_dir=work / "redis") as server,
        EmbeddedPostgres(data_dir=work / "pg", pool_slots=plan.lanes) as database,
    ):
        capacity = asyncio.run(
            _db_capacity(database.url, plan.lanes, plan.latency_ms / 1000, seconds=5.0)
        )
        print(
            f"database: {plan.lanes} lanes x {plan.latency_ms:g} ms, measured "
            f"{capacity:.0f} queries/s; the spike offers {plan.spike:g}x that",
            flush=True,
        )
        rows = []
        flush = redis.Redis.from_url(server.url)
        try:
            for count in plan.replicas:
                for budget in plan.budgets:
                    flush.flushall()
                    tag = f"{count}-{'budget' if budget else 'alone'}"
                    print(f"{count} replica(s), budget {'on' if budget else 'off'}:", flush=True)
                    env = replica_env(server.url, database.url, plan, budget)
                    run = Run(count, budget)
                    with fleet(count, env, work, tag) as (urls, controller):
                        if not budget:
                            size_for_one(controller, plan.lanes)
                        asyncio.run(_drive(urls, plan, capacity, run))
                        run.decisions = _decisions(controller)
                    row = summarize(run, capacity, plan)
                    print("   ", json.dumps({k: row[k] for k in list(row)[:9]}), flush=True)
                    rows.append(row)
        finally:
            flush.close()
    return {
        "scenario": "shared-db",
        "slo_p99_ms": SLO_S * 1000,
        "capacity_qps": round(capacity, 1),
        "plan": asdict(plan),
        "rows": rows,
    }


def run_shared_db_command(args: Any) -> int:
    plan = QUICK if args.quick else FULL
    if args.replicas:
        plan = replace(plan, replicas=parse_counts(args.replicas))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="surgeguard-bench-") as work:
        report = bench(plan, Path(work))
    report["command"] = "surgeguard bench " + " ".join(sys.argv[2:])
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2, default=_json_default))
    print(table(report["rows"]))
    print(f"written: {args.out / 'summary.json'}")
    return 0
