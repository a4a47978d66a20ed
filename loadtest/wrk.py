"""Running wrk and reading what it printed.

``wrk_command`` builds a one-thread run, ``run_wrk`` runs it as a child that dies with
this process, and ``parse_wrk_output`` turns wrk 4.x's stdout into a ``WrkResult``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from surgeguard.process import die_with_parent

WRK_GRACE_S = 30.0  # beyond the run's duration before a hung wrk is killed, seconds

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_LATENCY_AVG = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)


class WrkError(RuntimeError):
    """wrk exited with a failure status."""


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
    """Run wrk to completion (killed after ``duration_s`` + a grace period, seconds);
    raises ``WrkError`` when it fails."""
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
        raise WrkError(f"{shlex.join(command)} exited {process.returncode}: {err.strip()}")
    return parse_wrk_output(out)


def wrk_version() -> str:
    """The first line ``wrk -v`` prints ("?" when it prints nothing)."""
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
