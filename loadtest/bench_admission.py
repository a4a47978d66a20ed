"""Admission micro-benchmark: what the door costs, and how cheaply it says no.

Run as ``python -m loadtest.bench_admission [--duration S] [--rounds N]
[--connections C] [--out FILE.json]``.

Three targets, each one uvicorn worker (``surgeguard target``), share one embedded
Redis and are measured side by side with ``wrk -t1`` (one load thread, so the server
keeps a core of this 2-core machine):

- ``admission_on``:  ``GET /ping`` through the admission middleware (answers 200);
- ``admission_off``: ``GET /ping`` with ``--no-admission`` (answers 200);
- ``rejection``:     ``GET /ping`` with ``X-Priority: sheddable`` on a target started
  with ``--mode shed_sheddable``, so the middleware answers every request 429.

The variants run interleaved (on, off, rejection, on, off, ...) so machine noise hits
all alike. Reported: the median requests/s of each and the ratios of medians
(goals: on/off >= 0.93, rejection/on >= 2.5), plus per-round ratios. Every rejection
run is cross-checked against the target's ``surgeguard_rejections_total{reason="mode"}``.

Also reported: the server's CPU microseconds per request (from ``/proc/PID/stat``) and
how much of a core it got. On a shared machine requests/s fall whenever other work takes
the server's core; CPU per request barely moves, so the ratios computed from it
(``ratios_from_server_cpu``) are the steadier estimate of the same goals.

Exit status: 0 when every check passed (goals met or not: they are reported), 1 when a
check failed (unexpected statuses, socket errors, a metrics mismatch), 2 when the
benchmark could not run (no ``wrk``, a target that did not start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from loadtest.processes import (
    HOST,
    READY_TIMEOUT_S,
    ChildError,
    child_env,
    free_port,
    spawn,
    tail,
    wait_healthy,
)
from surgeguard.embedded_redis import EmbeddedRedis
from surgeguard.process import die_with_parent, terminate

PATH = "/ping"
STOP_TIMEOUT_S = 10.0
WRK_GRACE_S = 30.0  # beyond --duration before a hung wrk is killed, seconds
TARGET_LIMITS = ("--concurrency-limit", "10000", "--queue-limit", "1000")
STARVED_CORES = 0.9  # a measurement whose server got less than this had CPU stolen
GOALS: dict[str, float] = {"admission_on_vs_off": 0.93, "rejection_vs_admitted": 2.5}
MODE_REJECTIONS = re.compile(
    r'^surgeguard_rejections_total\{[^}]*reason="mode"[^}]*\}\s+(\S+)\s*$', re.MULTILINE
)


class BenchError(RuntimeError):
    """The benchmark could not run (missing tool, target that would not start)."""


# -- the variants ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One target configuration and the request load sent to it."""

    name: str
    description: str
    target_args: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    expected_status: int


ADMISSION_ON = Variant("admission_on", "GET /ping, admission on", (), (), 200)
ADMISSION_OFF = Variant("admission_off", "GET /ping, --no-admission", ("--no-admission",), (), 200)
REJECTION = Variant(
    "rejection",
    "GET /ping X-Priority: sheddable, --mode shed_sheddable",
    ("--mode", "shed_sheddable"),
    (("X-Priority", "sheddable"),),
    429,
)
VARIANTS: tuple[Variant, ...] = (ADMISSION_ON, ADMISSION_OFF, REJECTION)


# -- wrk output -----------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_LATENCY_AVG = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)


class WrkParseError(ValueError):
    """wrk's output lacked a line the benchmark needs."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported. Times in milliseconds, durations in seconds."""

    requests: int
    duration_s: float
    requests_per_s: float
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    latency_avg_ms: float | None = None
    latency_percentiles_ms: dict[str, float] = field(default_factory=dict)

    @property
    def socket_error_count(self) -> int:
        return sum(self.socket_errors.values())


def _to_ms(value: str, unit: str) -> float:
    """A wrk time (``value`` in ``unit``: us, ms, s, m or h) in milliseconds."""
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk 4.x stdout. A missing "Non-2xx or 3xx" or "Socket errors" line means 0."""
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None:
        raise WrkParseError(f"no 'Requests/sec' or 'N requests in' line in wrk output:\n{text}")
    non_2xx = _NON_2XX.search(text)
    errors = _SOCKET_ERRORS.search(text)
    latency = _LATENCY_AVG.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=_to_ms(total.group(2), total.group(3)) / 1000.0,
        requests_per_s=float(rps.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=(
            dict(
                zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)
            )
            if errors
            else {}
        ),
        latency_avg_ms=_to_ms(latency.group(1), latency.group(2)) if latency else None,
        latency_percentiles_ms={f"p{p}": _to_ms(v, u) for p, v, u in _PERCENTILE.findall(text)},
    )


def wrk_command(
    url: str, headers: Sequence[tuple[str, str]], *, connections: int, duration_s: float
) -> list[str]:
    """``wrk -t1 -c<connections> -d<duration_s>s --latency [-H ...] url``."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    return [*command, url]


def run_wrk(command: Sequence[str], duration_s: float) -> WrkResult:
    """Run wrk to completion (killed after ``duration_s`` + a grace period, seconds)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    )
    try:
        out, err = process.communicate(timeout=duration_s + WRK_GRACE_S)
    finally:
        if process.poll() is None:  # timeout or Ctrl-C: stop this wrk, by its pid
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise BenchError(f"{shlex.join(command)} exited {process.returncode}: {err.strip()}")
    return parse_wrk_output(out)


# -- target processes -----------------------------------------------------------------


@dataclass
class Target:
    """One running ``surgeguard target`` child."""

    variant: Variant
    port: int
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_target(variant: Variant, env: Mapping[str, str], log_dir: Path) -> Target:
    """Spawn a target for ``variant`` on a free port; output goes to a log file."""
    port = free_port()
    args = ["target", "--host", HOST, "--port", str(port), *TARGET_LIMITS, *variant.target_args]
    log_path = log_dir / f"{variant.name}.log"
    process = spawn(args, dict(env), log_path)
    return Target(variant, port, [sys.executable, "-m", "surgeguard", *args], process, log_path)


def wait_target(target: Target, deadline: float) -> None:
    """Poll ``/healthz`` until 200 or ``deadline`` (a ``time.monotonic()`` value)."""
    try:
        wait_healthy(
            f"{target.base_url}/healthz",
            target.process,
            target.log_path,
            timeout_s=deadline - time.monotonic(),
        )
    except ChildError as exc:
        if target.process.poll() is not None:
            problem = f"exited with status {target.process.returncode}"
        else:
            problem = f"did not answer /healthz within {READY_TIMEOUT_S:.0f} s"
        raise BenchError(
            f"target {target.variant.name} {problem}:\n{tail(target.log_path)}"
        ) from exc


@contextmanager
def running_targets(
    variants: Sequence[Variant], redis_url: str, log_dir: Path
) -> Iterator[list[Target]]:
    """All targets up and healthy for the block; each stopped by its pid afterwards."""
    targets: list[Target] = []
    try:
        env = child_env(redis_url)
        for variant in variants:  # spawn all first: they import in parallel
            targets.append(start_target(variant, env, log_dir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for target in targets:
            wait_target(target, deadline)
        yield targets
    finally:
        with _signals_deferred():  # a second Ctrl-C must not cut the cleanup short
            for target in reversed(targets):
                terminate(target.process, timeout_s=STOP_TIMEOUT_S)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block; they are delivered after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# -- checks against the targets -------------------------------------------------------


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0
) -> httpx.Response:
    """GET on loopback, ignoring any proxy set in the environment."""
    return httpx.get(url, headers=headers, timeout=timeout_s, trust_env=False)


def sample_response(target: Target) -> dict[str, Any]:
    """One request as the load will send it: status and the rejection reason header."""
    response = http_get(f"{target.base_url}{PATH}", headers=dict(target.variant.headers))
    return {
        "status": response.status_code,
        "x_surgeguard_reason": response.headers.get("x-surgeguard-reason"),
    }


def mode_rejections(target: Target) -> float:
    """Sum of ``surgeguard_rejections_total{reason="mode"}`` over priorities (requests)."""
    text = http_get(f"{target.base_url}/metrics").text
    return sum(float(value) for value in MODE_REJECTIONS.findall(text))


def check_sample(variant: Variant, sample: Mapping[str, Any]) -> list[str]:
    """Problems with the one request sent before the load (empty: as expected).

    A rejection must be the middleware's own 429 for the active mode, not any 429."""
    problems: list[str] = []
    if sample["status"] != variant.expected_status:
        problems.append(
            f"sample {variant.name}: status {sample['status']}, expected {variant.expected_status}"
        )
    if variant.expected_status == 429 and sample["x_surgeguard_reason"] != "mode":
        problems.append(
            f"sample {variant.name}: X-Surgeguard-Reason {sample['x_surgeguard_reason']!r}, "
            "expected 'mode'"
        )
    return problems


def check_measurement(
    variant: Variant, result: WrkResult, metric_delta: float | None, connections: int
) -> list[str]:
    """Problems with one measurement (empty: it is valid).

    A rejection run must be all non-2xx, and the target's counter must have grown by
    that many, give or take the ``connections`` requests wrk leaves unread at its end."""
    problems: list[str] = []
    if result.socket_error_count:
        problems.append(f"socket errors {result.socket_errors}")
    expected_non_2xx = result.requests if variant.expected_status >= 300 else 0
    if result.non_2xx_3xx != expected_non_2xx:
        problems.append(
            f"{result.non_2xx_3xx} non-2xx/3xx of {result.requests} responses, "
            f"expected {expected_non_2xx}"
        )
    if metric_delta is not None:
        slack = metric_delta - result.non_2xx_3xx
        if not 0 <= slack <= connections:
            problems.append(
                f'rejections_total{{reason="mode"}} grew by {metric_delta:.0f}, '
                f"wrk saw {result.non_2xx_3xx} non-2xx responses"
            )
    return problems


# -- measuring ------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """The knobs of one benchmark run. Durations in seconds."""

    duration_s: float
    rounds: int
    connections: int
    warmup_s: float


@dataclass(frozen=True)
class Measurement:
    """One variant in one round. ``server_cpu_s`` and ``wrk_cpu_s``: CPU seconds the
    target and wrk used during the measurement."""

    variant: str
    wrk: WrkResult
    server_cpu_s: float | None
    wrk_cpu_s: float
    metric_delta: float | None
    problems: list[str]

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per answered request, microseconds: steadier than requests/s on a
        shared machine, since it does not count time the server spent waiting for a core."""
        if self.server_cpu_s is None or not self.wrk.requests:
            return None
        return self.server_cpu_s / self.wrk.requests * 1e6

    @property
    def server_cores(self) -> float | None:
        """Cores the server kept busy (1.0: saturated; below: wrk or other load held it back)."""
        if self.server_cpu_s is None or not self.wrk.duration_s:
            return None
        return self.server_cpu_s / self.wrk.duration_s

    @property
    def wrk_cores(self) -> float:
        """Cores wrk kept busy (near 1.0: the load generator itself was the limit)."""
        return self.wrk_cpu_s / self.wrk.duration_s if self.wrk.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "requests_per_s": self.wrk.requests_per_s,
            "server_cpu_us_per_request": self.cpu_us_per_request,
            "server_cores": self.server_cores,
            "wrk_cores": self.wrk_cores,
            "wrk": asdict(self.wrk),
            "mode_rejections_delta": self.metric_delta,
            "problems": self.problems,
        }


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc is absent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of all reaped child processes so far (here: the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(target: Target, config: BenchConfig) -> Measurement:
    """Warm the target up for ``config.warmup_s`` s, then load it for ``duration_s`` s."""
    variant = target.variant
    url = f"{target.base_url}{PATH}"
    if config.warmup_s > 0:
        run_wrk(
            wrk_command(
                url, variant.headers, connections=config.connections, duration_s=config.warmup_s
            ),
            config.warmup_s,
        )
    counted = variant.expected_status == 429
    before = mode_rejections(target) if counted else 0.0
    cpu_before, wrk_before = process_cpu_s(target.process.pid), children_cpu_s()
    result = run_wrk(
        wrk_command(
            url, variant.headers, connections=config.connections, duration_s=config.duration_s
        ),
        config.duration_s,
    )
    cpu_after, wrk_cpu_s = process_cpu_s(target.process.pid), children_cpu_s() - wrk_before
    delta = mode_rejections(target) - before if counted else None
    cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    problems = check_measurement(variant, result, delta, config.connections)
    return Measurement(variant.name, result, cpu_s, wrk_cpu_s, delta, problems)


def cpu_ratios(cpu_us: Mapping[str, float | None]) -> dict[str, float] | None:
    """The goal ratios as a saturated server with a core of its own would show them:
    from server CPU microseconds per request (the cheaper variant serves more)."""
    on, off, rejection = (cpu_us[v.name] for v in VARIANTS)
    if on is None or off is None or rejection is None:
        return None
    return ratios(
        {ADMISSION_ON.name: 1 / on, ADMISSION_OFF.name: 1 / off, REJECTION.name: 1 / rejection}
    )


def ratios(rps: Mapping[str, float]) -> dict[str, float]:
    """The two goal ratios from requests/s per variant name."""
    return {
        "admission_on_vs_off": rps[ADMISSION_ON.name] / rps[ADMISSION_OFF.name],
        "rejection_vs_admitted": rps[REJECTION.name] / rps[ADMISSION_ON.name],
    }


def run_rounds(targets: Sequence[Target], config: BenchConfig) -> list[dict[str, Any]]:
    """``config.rounds`` rounds, each measuring every target once in order."""
    rounds: list[dict[str, Any]] = []
    for number in range(1, config.rounds + 1):
        measurements = [measure(target, config) for target in targets]
        rps = {m.variant: m.wrk.requests_per_s for m in measurements}
        rounds.append(
            {
                "round": number,
                "requests_per_s": rps,
                "ratios": ratios(rps),
                "measurements": [m.to_json() for m in measurements],
            }
        )
        print(
            f"round {number}/{config.rounds}: "
            + ", ".join(f"{name} {value:,.0f}/s" for name, value in rps.items()),
            flush=True,
        )
    return rounds


# -- the report -----------------------------------------------------------------------


def summarize(rounds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Median requests/s per variant over the rounds, and the ratios of those medians."""
    medians = {
        v.name: statistics.median(r["requests_per_s"][v.name] for r in rounds) for v in VARIANTS
    }
    return medians, ratios(medians)


def median_measured(rounds: Sequence[Mapping[str, Any]], key: str) -> dict[str, float | None]:
    """Median of measurement field ``key`` per variant name (None when never measured)."""
    values: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
    for r in rounds:
        for m in r["measurements"]:
            if m[key] is not None:
                values[m["variant"]].append(m[key])
    return {name: statistics.median(vs) if vs else None for name, vs in values.items()}


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "wrk": _wrk_version(),
    }


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


def format_table(report: Mapping[str, Any]) -> str:
    """The human-readable summary: per-round requests/s, medians, ratios vs goals."""
    names = [v.name for v in VARIANTS]
    ratio_names = list(GOALS)
    head = f"{'round':>6} " + "".join(f"{n:>15}" for n in names)
    head += "".join(f"{n:>24}" for n in ratio_names)
    lines = ["requests/s (wrk -t1), one uvicorn worker per target", head, "-" * len(head)]
    for r in report["rounds"]:
        row = f"{r['round']:>6} " + "".join(f"{r['requests_per_s'][n]:>15,.0f}" for n in names)
        lines.append(row + "".join(f"{r['ratios'][n]:>24.3f}" for n in ratio_names))
    lines.append("-" * len(head))
    medians, med_ratios = report["median_rps"], report["ratios"]
    lines.append(
        f"{'median':>6} "
        + "".join(f"{medians[n]:>15,.0f}" for n in names)
        + "".join(f"{med_ratios[n]:>24.3f}" for n in ratio_names)
    )
    for label, key, fmt in (
        ("server CPU per request, us (median)", "median_server_cpu_us_per_request", ".1f"),
        ("server cores busy (median)", "median_server_cores", ".2f"),
        ("wrk cores busy (median)", "median_wrk_cores", ".2f"),
    ):
        values = report[key]
        cells = "".join(
            f"{'-' if values[n] is None else format(values[n], fmt):>15}" for n in names
        )
        lines.append(f"{'':>6} {cells}  {label}")
    lines.append("")
    from_cpu = report.get("ratios_from_server_cpu")
    for name, goal in GOALS.items():
        verdict = "PASS" if med_ratios[name] >= goal else "MISS"
        line = f"{name:<24} {med_ratios[name]:6.3f}  (goal >= {goal})  {verdict}"
        if from_cpu is not None:
            line += f"   from server CPU/request: {from_cpu[name]:.3f}"
        lines.append(line)
    lines.extend(starvation_notes(report["rounds"]))
    problems = report["problems"]
    lines.append("checks: " + ("all passed" if not problems else f"{len(problems)} FAILED"))
    lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)


def starvation_notes(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines naming the measurements whose server got under ``STARVED_CORES`` of a core,
    split by the likely cause: wrk saturated its own core, or other load on the machine."""
    by_cause: dict[str, list[str]] = {"wrk": [], "other": []}
    for r in rounds:
        for m in r["measurements"]:
            if m["server_cores"] is not None and m["server_cores"] < STARVED_CORES:
                cause = "wrk" if m["wrk_cores"] >= STARVED_CORES else "other"
                by_cause[cause].append(f"{m['variant']}@{r['round']}")
    why = {
        "wrk": "wrk kept its own core busy: the load generator was the limit",
        "other": "other load on the machine took CPU: requests/s are noisy there, "
        "CPU per request much less so",
    }
    return [
        f"note: server under {STARVED_CORES} of a core in {', '.join(names)}: {why[cause]}"
        for cause, names in by_cause.items()
        if names
    ]


def build_report(
    command: str,
    config: BenchConfig,
    targets: Sequence[Target],
    samples: Mapping[str, Mapping[str, Any]],
    rounds: list[dict[str, Any]],
) -> dict[str, Any]:
    """The JSON document (see the module docstring for what each part means)."""
    medians, med_ratios = summarize(rounds)
    cpu_us = median_measured(rounds, "server_cpu_us_per_request")
    problems = [
        f"round {r['round']} {m['variant']}: {p}"
        for r in rounds
        for m in r["measurements"]
        for p in m["problems"]
    ]
    for target in targets:
        problems += check_sample(target.variant, samples[target.variant.name])
    return {
        "command": command,
        "config": asdict(config) | {"threads": 1, "path": PATH},
        "rounds": rounds,
        "median_rps": medians,
        "median_server_cpu_us_per_request": cpu_us,
        "ratios_from_server_cpu": cpu_ratios(cpu_us),
        "median_server_cores": median_measured(rounds, "server_cores"),
        "median_wrk_cores": median_measured(rounds, "wrk_cores"),
        "ratios": med_ratios,
        "goals": GOALS,
        "goals_met": {n: med_ratios[n] >= g for n, g in GOALS.items()},
        "problems": problems,
        "targets": {
            t.variant.name: {
                "description": t.variant.description,
                "argv": t.argv[1:],
                "port": t.port,
                "headers": dict(t.variant.headers),
                "expected_status": t.variant.expected_status,
                "sample": dict(samples[t.variant.name]),
            }
            for t in targets
        },
        "machine": machine_info(),
    }


# -- the command ----------------------------------------------------------------------


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_admission",
        description="Requests/s of /ping with admission on vs off, and of 429 rejections.",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=10.0,
        help="seconds of load per measurement (default 10)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=5,
        help="interleaved rounds of all variants (default 5)",
    )
    parser.add_argument(
        "--connections", type=_positive_int, default=50, help="wrk connections (default 50)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of unmeasured load before each measurement (default 1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-out/admission.json"),
        help="JSON report path (default bench-out/admission.json)",
    )
    return parser.parse_args(argv)


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the children


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Start Redis and the targets, measure, stop everything; return the report."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found on PATH: apt-get install -y wrk")
    config = BenchConfig(args.duration, args.rounds, args.connections, max(args.warmup, 0.0))
    with (
        tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp,
        EmbeddedRedis(data_dir=Path(tmp) / "redis") as redis_server,
        running_targets(VARIANTS, redis_server.url, Path(tmp)) as targets,
    ):
        samples = {t.variant.name: sample_response(t) for t in targets}
        rounds = run_rounds(targets, config)
        return build_report(command, config, targets, samples, rounds)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [
            sys.executable,
            "-m",
            "loadtest.bench_admission",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        report = run(args, command)
    except BenchError as exc:
        print(f"bench_admission: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench_admission: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"report: {args.out}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
