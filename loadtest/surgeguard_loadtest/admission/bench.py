"""Admission micro-benchmark: what the door costs, and how cheaply it says no.

Run as ``python -m surgeguard_loadtest.admission.bench [--duration S] [--rounds N]
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

This module is the command and its rounds; the parts live beside it:
``surgeguard_loadtest.wrk`` (running wrk, reading its output), ``.targets``
(the variants and their target processes), ``.measure`` (one
measurement: load, CPU accounting, checks) and ``.report`` (ratios,
medians, the JSON report and the table).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_loadtest.admission.measure import BenchConfig, measure, sample_response
from surgeguard_loadtest.admission.report import build_report, format_table, ratios
from surgeguard_loadtest.admission.targets import VARIANTS, Target, running_targets
from surgeguard_loadtest.processes import ChildError
from surgeguard_loadtest.wrk import WrkError


class BenchError(RuntimeError):
    """The benchmark could not run: a tool it needs is missing."""


# -- the rounds -----------------------------------------------------------------------


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
        prog="python -m surgeguard_loadtest.admission.bench",
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
            "surgeguard_loadtest.admission.bench",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        report = run(args, command)
    except (BenchError, ChildError, WrkError) as exc:  # could not run: exit status 2
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
