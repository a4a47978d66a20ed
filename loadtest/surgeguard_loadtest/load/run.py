"""``surgeguard load``: one scenario, Locust headless in its own process, the service
watched from outside, and the reports written at the end (also when stopped early).

The runner process (not gevent) owns everything with a side effect: it starts Locust,
scrapes the target's metrics and ``/healthz``, turns the controller's chaos on and
puts it back even if Locust dies, and announces the run to the controller so the
dashboard can mark it. Locust's process only generates load.

Files in ``--out``: ``summary.json`` (with the SLO, the phases and their verdicts, see
``verdict.py``), ``surgeguard_report.html`` (the run's own charts, ``load/plots.py``, with
``plotly.min.js`` beside it), ``report.html`` (Locust's), ``locust_stats.csv``,
``locust_stats_history.csv``, ``locust_failures.csv``, ``locust_exceptions.csv``,
``locust.log``.

A scenario with a storm (``storm``) also runs wrk's impatient connections
(``surgeguard_loadtest.storm.phase``) during its storm phase; the summary then reports both
populations side by side (``populations``: Locust's polite users, wrk's storm).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from surgeguard.runtime.process import die_with_parent
from surgeguard_loadtest import verdict
from surgeguard_loadtest.load import report as load_report
from surgeguard_loadtest.load.controller_calls import ChaosSchedule, ControllerCalls
from surgeguard_loadtest.load.locust_process import LOCUSTFILE, STOP_FILE, LocustOutput, stop_locust
from surgeguard_loadtest.load.machine_cpu import CpuWatch
from surgeguard_loadtest.load.options import LoadOptions
from surgeguard_loadtest.load.watch import (
    HealthWatch,
    KnobWatch,
    MetricsWatch,
    Probe,
    Window,
    span_totals,
)
from surgeguard_loadtest.storm.phase import OPEN_FILES_SPARE, StormError, StormRun
from surgeguard_loadtest.wrk import raise_open_files

PROGRESS_EVERY_S = 2.0


class LoadError(RuntimeError):
    """A run that cannot start; the message is one line naming the problem."""


def locust_command(opts: LoadOptions) -> list[str]:
    prefix = opts.out / "locust"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        opts.host,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(opts.out / "report.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",  # shed and failed requests are results, not a crash
        "--logfile",
        str(opts.out / "locust.log"),
    ]
    if opts.processes > 1:
        command += ["--processes", str(opts.processes)]
    # The population: impatient users only for a retry storm, else both kinds.
    if opts.user_classes:
        command += opts.user_classes
    elif opts.scenario.population == "impatient":
        command.append("ImpatientUser")
    elif opts.scenario.population == "polite":
        command.append("PoliteUser")
    else:
        command += ["PoliteUser", "ImpatientUser"]
    return command


def locust_env(opts: LoadOptions) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")}
    env.update(
        LOADTEST_SCENARIO=opts.scenario.name,
        LOADTEST_USERS=str(opts.scenario.users),
        LOADTEST_DURATION_S=str(opts.scenario.duration_s),
        LOADTEST_BASELINE_USERS=str(opts.scenario.stages[0].users),
        LOADTEST_CLIENT_KEYS=opts.client_keys,
        LOADTEST_STOP_FILE=str(opts.out / STOP_FILE),
    )
    env.pop("SURGEGUARD_ADMIN_TOKEN", None)  # the load generator needs no operator rights
    return env


def check(opts: LoadOptions) -> None:
    """Everything that can be known before a single user starts."""
    if opts.scenario.chaos and not (opts.controller_url and opts.admin_token):
        raise LoadError(
            f"scenario {opts.scenario.name} changes the db through the controller's chaos "
            "API: give --controller URL and set SURGEGUARD_ADMIN_TOKEN"
        )
    if opts.scenario.storm_s is not None:
        try:
            opts.storm.check()
        except StormError as exc:
            raise LoadError(str(exc)) from None
        wanted = opts.storm.connections + OPEN_FILES_SPARE
        if raise_open_files(wanted) < wanted:
            raise LoadError(
                f"{opts.storm.connections} storm connections need {wanted} open files; "
                "the hard limit is lower (raise it: ulimit -Hn)"
            )
    try:
        httpx.get(f"{opts.host.rstrip('/')}/healthz", timeout=5, trust_env=False)
    except httpx.HTTPError as exc:
        raise LoadError(f"the target {opts.host} does not answer /healthz: {exc}") from None
    if opts.controller_url:
        try:
            httpx.get(f"{opts.controller_url.rstrip('/')}/healthz", timeout=5, trust_env=False)
        except httpx.HTTPError as exc:
            raise LoadError(
                f"the controller {opts.controller_url} does not answer /healthz: {exc}"
            ) from None


@contextmanager
def _terminate_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT end the run early (the reports are still written)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_load(opts: LoadOptions, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the scenario to its end (or until SIGTERM/SIGINT) and write the reports.
    Returns the summary (also in ``out/summary.json``)."""
    say = say or (lambda line: print(line, flush=True))
    warn = lambda line: print(f"warning: {line}", file=sys.stderr, flush=True)  # noqa: E731
    check(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    controller = ControllerCalls(opts, warn)
    stop = threading.Event()
    origin = time.monotonic()
    started_at = time.time()
    wall_of = lambda at: started_at + at  # noqa: E731  (origin and started_at: one moment)
    metrics = MetricsWatch(
        opts.host, origin, slo_s=opts.slo_p99_ms / 1000, keep_scrapes=opts.keep_scrapes
    )
    health = HealthWatch(opts.host, origin=origin)
    knobs = KnobWatch(opts.controller_url, origin) if opts.controller_url else None
    cpu = CpuWatch(origin)
    watchers = [w for w in (metrics, health, knobs, cpu) if w is not None]
    for w in watchers:
        w.start()
    if opts.marks:
        controller.mark("start", opts)
    process = subprocess.Popen(
        locust_command(opts),
        env=locust_env(opts),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop Locust
        preexec_fn=die_with_parent(),
    )
    output = LocustOutput(process)
    output.start()
    chaos = ChaosSchedule(opts, controller, output)
    chaos.start()
    storm = None
    if opts.scenario.storm_s is not None:
        storm = StormRun(opts.host, opts.scenario, opts.storm, output, warn)
        storm.start()
    stopped_early = False
    ended = time.monotonic()  # when the run ended, before the reports
    try:
        with _terminate_on_signals(stop):
            next_line = time.monotonic() + PROGRESS_EVERY_S
            while process.poll() is None:
                if stop.wait(0.2):
                    stopped_early = True
                    break
                if not opts.quiet and time.monotonic() >= next_line:
                    next_line += PROGRESS_EVERY_S
                    say(_progress(opts, output, metrics, health, wall_of))
        ended = time.monotonic()
    finally:
        if storm is not None:
            storm.stop()
        stop_locust(process, opts.out / STOP_FILE)
        chaos.undo()
        output.join(timeout=5)
        for w in watchers:
            w.stop()
        if opts.marks:
            controller.mark("end", opts)
    # Everything on Locust's clock: t = 0 is when its shape started.
    offset = output.started_mono - origin if output.started.is_set() else 0.0
    # How far the scenario got (Locust's clock): a run stopped early is judged on the
    # phases it reached, up to where it stopped.
    reached = (
        (ended - output.started_mono if output.started.is_set() else 0.0) if stopped_early else None
    )
    summary = _summary(
        opts, started_at, stopped_early, process.returncode, metrics, health, knobs, chaos, offset
    )
    summary["machine_cpu"] = cpu.summary(opts.scenario.phase_spans(), offset)
    summary.update(judged(opts, summary["windows"], summary["healthz"]["timeline"], reached))
    if storm is not None:
        summary.update(load_report.storm_sides(opts.scenario, summary, storm.summary()))
    summary["locust_output_tail"] = output.other[-20:]
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _write_report(summary, opts.out, warn)
    if opts.keep_scrapes:  # for the caller only, on Locust's clock like the windows
        summary["scrapes"] = [replace(s, at=s.at - origin - offset) for s in metrics.scrapes]
    return summary


def _write_report(summary: dict[str, Any], out: Path, warn: Callable[[str], None]) -> None:
    from surgeguard_loadtest.load.plots import write_report  # plotly loads in a second or so

    try:
        write_report(summary, out)
    except Exception as exc:  # a chart that cannot be drawn must not lose a finished run
        warn(f"the run's HTML report was not written: {type(exc).__name__}: {exc}")


def _progress(
    opts: LoadOptions,
    output: LocustOutput,
    metrics: MetricsWatch,
    health: HealthWatch,
    wall_of: Callable[[float], float],
) -> str:
    """``wall_of``: a window's ``at`` (seconds since ``origin``) as unix seconds."""
    if not output.started.is_set():
        return "[  starting Locust ]"
    elapsed = time.monotonic() - output.started_mono
    tick = opts.scenario.tick(elapsed)
    # Locust's columns and the server's from the same wall-clock second (see aligned).
    pair = load_report.aligned(list(metrics.windows[-8:]), output.seconds, wall_of)
    window, counts = pair if pair is not None else (None, None)
    age = time.time() - wall_of(window.at) if window is not None else None
    recent = health.latencies_ms[-4:]
    return load_report.progress_line(
        elapsed,
        opts.scenario.phase(elapsed),
        tick[0] if tick else 0,
        output.latest,
        window,
        max(recent) if recent else None,
        counts,
        age,
    )


def _summary(
    opts: LoadOptions,
    started_at: float,
    stopped_early: bool,
    exit_code: int | None,
    metrics: MetricsWatch,
    health: HealthWatch,
    knobs: KnobWatch | None,
    chaos: ChaosSchedule,
    offset: float,
) -> dict[str, Any]:
    log = opts.out / "locust.log"
    log_lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    server: dict[str, Any] = {
        "note": "server-side, from the target's /metrics: the truth",
        "scrape_failures": metrics.failures,
    }
    if metrics.first is not None and metrics.last is not None:
        server.update(span_totals(metrics.first, metrics.last))
    server.update(load_report.server_peaks(metrics.windows))
    client = load_report.client_side(opts.out / "locust")
    windows = [replace(w, at=round(w.at - offset, 2)) for w in metrics.windows]
    probes = [replace(p, at=round(p.at - offset, 2)) for p in health.probes]
    return {
        "scenario": opts.scenario.name,
        "id": opts.run_id,
        "host": opts.host,
        "users": opts.scenario.users,
        "duration_s": opts.scenario.duration_s,
        "population": opts.scenario.population,
        "stages": [asdict(s) for s in opts.scenario.stages],
        "started_at": started_at,
        "ended_at": time.time(),
        "stopped_early": stopped_early,
        "locust_exit_code": exit_code,
        "server_side": server,
        "client_side": client,
        "generator": {
            "users_peak": client["users_peak"],
            "rps_peak": client["rps_peak"],
            "cpu_saturated": load_report.generator_saturated(log_lines),
            "processes": opts.processes,
            "note": "what this machine's load generator could actually offer",
        },
        "healthz": {**health.summary(), "timeline": [[p.at, p.ms, p.ok] for p in probes]},
        "chaos": chaos.applied,
        "locust_started_after_s": round(offset, 2),
        "knobs": [{"at": round(at - offset, 2), **values} for at, values in knobs.samples]
        if knobs
        else [],
        "modes": [{"at": round(at - offset, 2), "modes": list(m)} for at, m in knobs.modes]
        if knobs
        else None,
        "windows": load_report.windows_json(windows),
        "files": sorted(
            {p.name for p in opts.out.iterdir()}
            | {"summary.json", load_report.REPORT_HTML, "plotly.min.js"}
        ),
    }


def judged(
    opts: LoadOptions,
    windows: list[dict[str, Any]],
    probes: list[list[Any]],
    reached_s: float | None = None,
) -> dict[str, Any]:
    """The SLO, the numbers per phase and each phase's verdict, for the summary, from
    the summary's windows and /healthz timeline (Locust's clock). ``reached_s``: where
    a run stopped early got to (its later phases are left out, the one it stopped in
    cut short); None: the whole run."""
    s = opts.scenario
    spans = s.phase_spans()
    if reached_s is not None and reached_s < s.duration_s:
        spans = tuple(
            replace(span, end_s=round(min(span.end_s, reached_s), 2))
            for span in spans
            if span.start_s < reached_s
        )
    server = [Window(**w) for w in windows]
    health = [Probe(*p) for p in probes]
    phases = [
        verdict.measure(span, server, health, opts.slo_p99_ms, opts.thresholds) for span in spans
    ]
    names = {p.name for p in phases}
    baseline_name = s.baseline_phase if s.baseline_phase in names else None
    baseline = next((p for p in phases if p.name == baseline_name), None)
    return {
        "slo": {
            "p99_ms": opts.slo_p99_ms,
            "baseline_phase": baseline_name,
            "thresholds": asdict(opts.thresholds),
        },
        "phases": [p.to_json(baseline) for p in phases],
        "verdicts": [
            v.to_json() for v in verdict.judge_all(phases, baseline_name, opts.thresholds)
        ],
    }
