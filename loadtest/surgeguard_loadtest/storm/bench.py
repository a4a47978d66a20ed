"""``surgeguard bench --scenario storm``: impatient and hostile clients against one
replica with its controller, guarded and unguarded, side by side in one run.

Each configuration gets a freshly started replica and controller (default settings,
an emptied embedded Redis) and the same phases, all driven by wrk:

- ``idle``: nothing (after a short unmeasured warm-up): the replica's memory at rest;
- ``polite``: a closed loop of 32 connections on ``GET /feed`` with ``demo-key``;
- ``alone``: the legitimate client alone (20 connections, ``demo-key``);
- ``attacker``: the same client next to an attacker without a key that claims
  ``X-Priority: critical`` (200 connections); the client's 2xx are counted by a wrk
  script (wrk itself counts responses, not statuses);
- ``storm_<N>``: N impatient connections (they ignore ``Retry-After``) on ``/feed``
  with one valid key, for each of the two storm sizes.

The configurations: ``guarded`` (defaults) and ``unguarded`` (the target without its
penalty box, ``SURGEGUARD_PENALTY_BOX=false``; the controller without its hold rule,
``SURGEGUARD_CONTROLLER_HOLD_RULE=false``). Throughout, the replica's ``/metrics`` is
scraped every second and ``/healthz`` probed every quarter second (from processes of
their own, on a new connection each time as a liveness probe does: on the replica's
health port, which the targets are judged on, and on its service port), each answer
timed (``storm_watch.py``); the
numbers are read per phase (``storm_measure.py``) and judged against the issue's
targets (``storm_report.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis

from surgeguard.knobs import DOOR_KNOB_SPECS
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard.settings import SettingsError
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_loadtest import verdict
from surgeguard_loadtest.keys import DEMO_CLIENT_KEY
from surgeguard_loadtest.load.watch import Probe, window_between
from surgeguard_loadtest.processes import HOST, child_env, free_port, running
from surgeguard_loadtest.scenarios import PhaseSpan
from surgeguard_loadtest.storm.measure import SLO_S, Phase, idle_rss, phase_summary
from surgeguard_loadtest.storm.report import comparison, headline, markdown, table, targets
from surgeguard_loadtest.storm.watch import HealthProbe, TimedMetricsWatch
from surgeguard_loadtest.storm.watch import Probe as TimedProbe
from surgeguard_loadtest.wrk import (
    STATUS_SCRIPT,
    WrkError,
    WrkParseError,
    WrkProcess,
    WrkResult,
    raise_open_files,
    wrk_command,
)

PATH = "/feed"
OPEN_FILES_SPARE = 1_000


@dataclass(frozen=True)
class Configuration:
    about: str
    target: dict[str, str]  # settings (SURGEGUARD_* without the prefix) for the target
    controller: dict[str, str]  # ... and for its controller


CONFIGURATIONS = {
    "guarded": Configuration("defaults: penalty box and hold rule on", {}, {}),
    "unguarded": Configuration(
        "no penalty box, no hold rule",
        {"penalty_box": "false"},
        {"controller_hold_rule": "false"},
    ),
}


@dataclass(frozen=True)
class Plan:
    """Seconds of each phase and the clients' sizes."""

    polite_s: float
    storm_s: float
    attacker_s: float  # also the legitimate client's run alone
    storms: tuple[int, int]  # connections of the small and the large storm
    settle_s: float  # quiet between phases, for the limits to recover
    idle_s: float
    warmup_s: float
    polite_connections: int = 32
    legit_connections: int = 20
    attacker_connections: int = 200
    storm_threads: int = 2


FULL = Plan(15, 30, 10, (2_000, 10_000), settle_s=10, idle_s=5, warmup_s=3)
QUICK = Plan(5, 10, 5, (500, 2_000), settle_s=3, idle_s=3, warmup_s=2)


# The shortest quiet between two phases: each phase reads the scrapes from 1.5 s before
# its start to 1.5 s after its end (judge_phases), which then never reach into another
# phase's load.
MIN_SETTLE_S = 2.0


def plan_from(
    quick: bool, storms: str | None, seconds: float | None, settle_s: float | None = None
) -> Plan:
    """The plan for the flags; raises ``SettingsError`` naming a bad one."""
    plan = QUICK if quick else FULL
    if storms is not None:
        try:
            sizes = tuple(int(n) for n in storms.split(","))
        except ValueError:
            sizes = ()
        if len(sizes) != 2 or not plan.storm_threads <= sizes[0] < sizes[1]:
            raise SettingsError(
                f"--storms must be two connection counts SMALL,LARGE with "
                f"{plan.storm_threads} <= SMALL < LARGE, got {storms!r}"
            )
        plan = replace(plan, storms=(sizes[0], sizes[1]))
    if seconds is not None:
        if not 1 <= seconds <= 600:
            raise SettingsError(f"--seconds must be in [1, 600], got {seconds:g}")
        plan = replace(plan, polite_s=seconds, storm_s=seconds, attacker_s=seconds)
    if settle_s is not None:
        if not MIN_SETTLE_S <= settle_s <= 600:
            raise SettingsError(f"--settle-s must be in [{MIN_SETTLE_S:g}, 600], got {settle_s:g}")
        plan = replace(plan, settle_s=settle_s)
    return plan


@contextmanager
def stack(
    name: str, config: Configuration, redis_url: str, logs: Path
) -> Iterator[tuple[str, str]]:
    """A fresh target and its controller for the life of the block; yields the
    target's URL and its health port's."""
    port, cport, hport = free_port(), free_port(), free_port()
    url = f"http://{HOST}:{port}"
    with ExitStack() as children:
        children.enter_context(
            running(
                ["target", "--port", str(port), "--health-port", str(hport)],
                child_env(redis_url, **config.target),
                f"{url}/healthz",
                logs / f"target-{name}.log",
            )
        )
        children.enter_context(
            running(
                ["controller", "--target", url, "--port", str(cport)],
                child_env(redis_url, **config.controller),
                f"http://{HOST}:{cport}/healthz",
                logs / f"controller-{name}.log",
            )
        )
        try:
            yield url, f"http://{HOST}:{hport}"
        finally:
            keep_controller_record(f"http://{HOST}:{cport}", logs / f"controller-{name}")


def keep_controller_record(base: str, stem: Path) -> None:
    """The controller's decisions and per-tick history, saved beside its log: why the
    limit moved is the first question a surprising figure raises."""
    for what, query in (("decisions", "limit=1000"), ("history", "seconds=3600")):
        try:
            answer = httpx.get(f"{base}/api/v1/{what}?{query}", timeout=10.0)
            Path(f"{stem}-{what}.json").write_text(answer.text)
        except httpx.HTTPError as exc:
            Path(f"{stem}-{what}.json").write_text(json.dumps({"error": str(exc)}))


class Phases:
    """Runs the phases against one target, one after another, and records them."""

    def __init__(self, url: str, plan: Plan, script: Path, say: Callable[[str], None]) -> None:
        self.url, self.plan, self.script, self.say = url, plan, script, say
        self.done: list[Phase] = []

    def _wrk(
        self, connections: int, seconds: float, headers: list[tuple[str, str]], **kw: Any
    ) -> WrkProcess:
        command = wrk_command(
            self.url + PATH,
            headers,
            connections=connections,
            duration_s=seconds,
            timeout_s=max(seconds, 10.0),
            **kw,
        )
        return WrkProcess(command, seconds)

    def run(self, name: str, kind: str, seconds: float, clients: dict[str, WrkProcess]) -> None:
        """One phase: ``clients`` were just started; wait for them all (a phase
        without clients is ``seconds`` of quiet)."""
        self.say(f"  {name}: {seconds:g} s")
        start = time.monotonic()
        results: dict[str, WrkResult | str] = {}
        if not clients:
            time.sleep(seconds)
        for client, process in clients.items():
            try:
                results[client] = process.result()
            except (WrkError, WrkParseError) as exc:
                results[client] = str(exc).splitlines()[0]
                self.say(f"    {client}: {results[client]}")
        connections = int(name.split("_")[1]) if kind == "storm" else 0
        self.done.append(Phase(name, kind, start, time.monotonic(), results, connections))

    def all(self) -> list[Phase]:
        p, key = self.plan, [("X-Api-Key", DEMO_CLIENT_KEY)]
        self._wrk(p.polite_connections, p.warmup_s, key).result()  # unmeasured
        time.sleep(1.0)  # for the warm-up's last answers to leave the idle phase
        self.run("idle", "idle", p.idle_s, {})
        self.run(
            "polite",
            "polite",
            p.polite_s,
            {"polite": self._wrk(p.polite_connections, p.polite_s, key)},
        )
        time.sleep(p.settle_s)
        legit = {"script": self.script}
        self.run(
            "alone",
            "alone",
            p.attacker_s,
            {"legit": self._wrk(p.legit_connections, p.attacker_s, key, **legit)},
        )
        time.sleep(p.settle_s)
        attacker = [("X-Priority", "critical")]
        self.run(
            "attacker",
            "attacker",
            p.attacker_s,
            {
                "legit": self._wrk(p.legit_connections, p.attacker_s, key, **legit),
                "attacker": self._wrk(p.attacker_connections, p.attacker_s, attacker),
            },
        )
        for connections in p.storms:
            time.sleep(p.settle_s)
            storm = self._wrk(connections, p.storm_s, key, threads=p.storm_threads)
            self.run(f"storm_{connections}", "storm", p.storm_s, {"storm": storm})
        return self.done


def say(line: str) -> None:
    print(line, flush=True)


def run_configuration(
    name: str, redis_url: str, plan: Plan, work: Path, logs: Path
) -> dict[str, Any]:
    """One configuration's run and its summary."""
    config = CONFIGURATIONS[name]
    say(f"{name} ({config.about}):")
    with stack(name, config, redis_url, logs) as (url, health_url):
        metrics = TimedMetricsWatch(url, time.monotonic())
        health, service = HealthProbe(health_url), HealthProbe(url)
        for watcher in (metrics, health, service):
            watcher.start()
        try:
            phases = Phases(url, plan, work / "status.lua", say).all()
        finally:
            for watcher in (metrics, health, service):
                watcher.stop()
    idle = idle_rss(metrics.scrapes, phases[0])
    summaries = {
        p.name: phase_summary(
            p, metrics.scrapes, metrics.timings, health.probes, service.probes, idle
        )
        for p in phases
    }
    storms = [p.name for p in phases if p.kind == "storm"]
    head = headline(summaries, storms)
    judged = judge_phases([p for p in phases if p.kind != "idle"], metrics.scrapes, health.probes)
    for line in judged["verdicts"]:
        say(f"  {line['line']}")
    minimum = DOOR_KNOB_SPECS["concurrency_limit"].minimum
    return {
        "about": config.about,
        "env": {
            "target": {f"SURGEGUARD_{k.upper()}": v for k, v in config.target.items()},
            "controller": {f"SURGEGUARD_{k.upper()}": v for k, v in config.controller.items()},
        },
        "idle_rss_mb": None if idle is None else round(idle / 2**20, 1),
        "headline": head,
        "targets": targets(head, summaries, minimum),
        "phases": summaries,
        **judged,
    }


def judge_phases(
    phases: list[Phase], scrapes: list[Scrape], health: list[TimedProbe]
) -> dict[str, Any]:
    """The verdict per phase against the SLO (``surgeguard_loadtest.verdict``; the polite
    phase is the baseline), from the replica's one-second windows and the health
    port's probes, each phase on its own clock (0: its start)."""
    numbers = []
    for phase in phases:
        inside = [s for s in scrapes if phase.start - 1.5 <= s.at <= phase.end + 1.5]
        windows = [window_between(a, b, phase.start, SLO_S) for a, b in itertools.pairwise(inside)]
        probes = [Probe(p.at - phase.start, p.seconds * 1000, p.ok) for p in health]
        span = PhaseSpan(phase.name, 0.0, round(phase.end - phase.start, 2))
        numbers.append(verdict.measure(span, windows, probes, SLO_S * 1000))
    baseline = next((n for n in numbers if n.name == "polite"), None)
    return {
        "phase_numbers": [n.to_json(baseline) for n in numbers],
        "verdicts": [v.to_json() for v in verdict.judge_all(numbers, "polite")],
    }


def bench(plan: Plan, work: Path, logs: Path) -> dict[str, Any]:
    (work / "status.lua").write_text(STATUS_SCRIPT)
    results: dict[str, Any] = {}
    with EmbeddedRedis(data_dir=work / "redis") as server:
        flush = redis.Redis.from_url(server.url)
        try:
            for name in CONFIGURATIONS:
                flush.flushall()
                results[name] = run_configuration(name, server.url, plan, work, logs)
        finally:
            flush.close()
    return {
        "scenario": "storm",
        "slo_p99_ms": SLO_S * 1000,
        "path": PATH,
        "plan": asdict(plan),
        "configurations": results,
        "guarded_over_unguarded": comparison(
            results["guarded"]["headline"], results["unguarded"]["headline"]
        ),
    }


def run_storm_command(args: argparse.Namespace) -> int:
    plan = plan_from(args.quick, args.storms, args.seconds, args.settle_s)
    if shutil.which("wrk") is None:
        raise SettingsError("the storm benchmark needs wrk on PATH (apt-get install wrk)")
    wanted = plan.storms[1] + OPEN_FILES_SPARE
    if raise_open_files(wanted) < wanted:
        raise SettingsError(
            f"a storm of {plan.storms[1]} connections needs {wanted} open files; the hard "
            "limit is lower (ulimit -Hn)"
        )
    started = time.monotonic()
    logs = args.out / "logs"  # the children's own output, kept for a look afterwards
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="surgeguard-storm-") as work:
        report = bench(plan, Path(work), logs)
    report["command"] = "surgeguard bench " + " ".join(sys.argv[2:])
    report["seconds"] = round(time.monotonic() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    print(table(report))
    print(f"written: {args.out / 'summary.json'}, {args.out / 'report.md'}")
    return 0
