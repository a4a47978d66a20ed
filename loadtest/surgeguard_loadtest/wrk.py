"""Running wrk and reading what it printed.

``wrk_command`` builds a run (one thread unless told otherwise), ``WrkProcess`` runs
it as a child that dies with this process (in the background; ``interrupt`` ends it
early and wrk still prints what it measured), ``run_wrk`` runs one to completion, and
``parse_wrk_output`` turns wrk 4.x's stdout into a ``WrkResult``.

wrk counts responses, not statuses: ``STATUS_SCRIPT`` (a Lua script for ``wrk -s``)
counts the 2xx answers of its own connections, which is how one client's successes
are told apart from another's when both load the same server.
"""

from __future__ import annotations

import re
import resource
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from surgeguard.runtime.process import die_with_parent

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
_STATUS = re.compile(r"^STATUS 2xx (\d+) other (\d+)\s*$", re.MULTILINE)

# For ``wrk -s``: every thread counts its 2xx and other answers; ``done`` adds them up
# (each thread has its own Lua state) and prints one ``STATUS`` line.
STATUS_SCRIPT = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; other = 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local good, bad = 0, 0
  for _, t in ipairs(threads) do good = good + t:get("ok"); bad = bad + t:get("other") end
  io.write(string.format("STATUS 2xx %d other %d\\n", good, bad))
end
"""


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
    status_2xx: int | None = None  # counted by STATUS_SCRIPT (None: run without it)

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
    status = _STATUS.search(text)
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
        status_2xx=int(status.group(1)) if status else None,
    )


def _whole_s(seconds: float) -> int:
    return max(1, round(seconds))


def wrk_command(
    url: str,
    headers: Sequence[tuple[str, str]],
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float | None = None,
    script: Path | None = None,
) -> list[str]:
    """``wrk -t<threads> -c<connections> -d<duration_s>s --latency [--timeout Ns]
    [-s script] [-H ...] url``. ``timeout_s``: answers slower than this are counted as
    timeouts and left out of the latency figures (wrk's default: 2 s). wrk reads whole
    seconds only: both are rounded (to at least 1 s)."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{_whole_s(duration_s)}s"]
    command.append("--latency")
    if timeout_s is not None:
        command.append(f"--timeout={_whole_s(timeout_s)}s")
    if script is not None:
        command += ["-s", str(script)]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    return [*command, url]


class WrkProcess:
    """One wrk run in the background, started at construction. ``result`` waits for it
    (killed after its duration + a grace period); ``interrupt`` ends it early, and wrk
    still prints what it measured. Start it from a long-lived thread (see
    ``die_with_parent``)."""

    def __init__(self, command: Sequence[str], duration_s: float) -> None:
        self.command = list(command)
        self.duration_s = duration_s
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(),
        )

    def interrupt(self) -> None:
        """SIGINT: wrk stops its connections and prints its report."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def result(self) -> WrkResult:
        """Wait for wrk; raises ``WrkError`` when it fails, ``WrkParseError`` when it
        printed no report."""
        try:
            out, err = self.process.communicate(timeout=self.duration_s + WRK_GRACE_S)
        finally:
            if self.process.poll() is None:  # timeout or Ctrl-C: stop this wrk, by its pid
                self.process.kill()
                self.process.wait()
        if self.process.returncode != 0:
            raise WrkError(
                f"{shlex.join(self.command)} exited {self.process.returncode}: {err.strip()}"
            )
        return parse_wrk_output(out)


def run_wrk(command: Sequence[str], duration_s: float) -> WrkResult:
    """Run wrk to completion (killed after ``duration_s`` + a grace period, seconds);
    raises ``WrkError`` when it fails."""
    return WrkProcess(command, duration_s).result()


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never past the
    hard limit; children inherit it). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def wrk_version() -> str:
    """The first line ``wrk -v`` prints ("?" when it prints nothing)."""
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
