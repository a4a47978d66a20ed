"""Where the machine's CPU goes during a load run: every process's, by what it is.

On one machine the load generator, the replica, the database and the controller share
the cores, and a replica that gets less CPU than it had when its capacity was measured
serves less, whatever its limits do. So a run records, once a second, the CPU of every
process on the machine (from ``/proc``), grouped by what it is: ``locust``, each
``surgeguard`` subcommand by name (``target``, ``controller``, ``worker``, ...),
``postgres``, ``redis``, and ``other``. The summary gives each phase's mean, in cores
(1.0: one core busy all the time), beside ``cores`` (how many the machine has).

Linux only: without ``/proc`` nothing is recorded and the summary says so.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

PROC = Path("/proc")
# How a process is named, first match wins: the load generator, the surgeguard
# subcommands (``surgeguard target ...``, ``python -m surgeguard target ...``), then the
# servers the stack runs.
_SUBCOMMANDS = ("target", "controller", "worker", "dashboard", "remote", "load", "postgres")


def group_of(cmdline: Sequence[str]) -> str:
    """What the process with this command line is (see the module's docstring)."""
    words = [Path(w).name for w in cmdline]
    if any("locust" in w for w in words):
        return "locust"
    for n, word in enumerate(words[:-1]):
        if word == "surgeguard" or (word == "-m" and words[n + 1] == "surgeguard"):
            after = words[n + 1 :] if word == "surgeguard" else words[n + 2 :]
            named = next((w for w in after if w in _SUBCOMMANDS), None)
            if named is not None:
                return named
    if any(w.startswith("postgres") for w in words):
        return "postgres"
    if any(w.startswith("redis-server") for w in words):
        return "redis"
    if any("streamlit" in w for w in words):
        return "dashboard"
    return "other"


def read_processes(proc: Path = PROC) -> dict[int, tuple[str, float]]:
    """Every process now: pid -> (its group, CPU seconds it has used, user + system).
    A process that ends while it is read is left out."""
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[int, tuple[str, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command's name in stat may hold spaces and parentheses: count from the last.
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        seen[int(entry.name)] = (group_of(raw.decode(errors="replace").split("\0")), used)
    return seen


def cores_between(
    before: Mapping[int, tuple[str, float]], now: Mapping[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    """Cores each group used between two readings ``seconds`` apart. A process new in
    ``now`` counts from 0 (it started in between); one gone from it is not counted."""
    if seconds <= 0:
        return {}
    cores: dict[str, float] = {}
    for pid, (group, used) in now.items():
        earlier = before.get(pid)
        start = earlier[1] if earlier is not None and earlier[0] == group else 0.0
        cores[group] = cores.get(group, 0.0) + max(0.0, used - start) / seconds
    return {g: round(c, 3) for g, c in sorted(cores.items())}


@dataclass(frozen=True)
class CpuSample:
    """One second: ``at`` seconds since the run's origin (the sample's end), and the
    cores each group used over it."""

    at: float
    cores: Mapping[str, float]


class Span(Protocol):
    """A phase of the run: its name and its seconds on the phases' clock."""

    @property
    def name(self) -> str: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...


def per_phase(samples: Iterable[CpuSample], spans: Iterable[Span]) -> dict[str, dict[str, float]]:
    """Each phase's mean cores by group (``at`` on the phases' clock); ``all`` is the
    machine's total. A phase without a sample is left out."""
    kept = list(samples)
    phases: dict[str, dict[str, float]] = {}
    for span in spans:
        inside = [s for s in kept if span.start_s < s.at <= span.end_s]
        if not inside:
            continue
        groups = sorted({g for s in inside for g in s.cores})
        mean = {g: round(statistics.fmean(s.cores.get(g, 0.0) for s in inside), 2) for g in groups}
        mean["all"] = round(statistics.fmean(sum(s.cores.values()) for s in inside), 2)
        phases[span.name] = mean
    return phases


class CpuWatch(threading.Thread):
    """Reads every process's CPU each ``period_s`` until stopped (a daemon thread).
    ``origin``: the run's start on the monotonic clock."""

    def __init__(self, origin: float, period_s: float = 1.0, proc: Path = PROC) -> None:
        super().__init__(name="cpu-watch", daemon=True)
        self.origin, self.period_s, self.proc = origin, period_s, proc
        self.samples: list[CpuSample] = []
        self.available = proc.is_dir()
        self._stop_event = threading.Event()

    def run(self) -> None:
        if not self.available:
            return
        before, then = read_processes(self.proc), time.monotonic()
        while not self._stop_event.wait(self.period_s):
            now, at = read_processes(self.proc), time.monotonic()
            self.samples.append(
                CpuSample(round(at - self.origin, 2), cores_between(before, now, at - then))
            )
            before, then = now, at

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def summary(self, spans: Iterable[Span], offset: float) -> dict[str, Any]:
        """For the run's summary: the phases' means and the timeline, on the phases'
        clock (``offset``: seconds from the origin to it)."""
        if not self.available:
            return {"note": f"not recorded: no {self.proc} on this machine"}
        shifted = [CpuSample(round(s.at - offset, 2), s.cores) for s in self.samples]
        return {
            "note": "cores used by every process on the machine, by what it is, per phase",
            "cores": os.cpu_count(),
            "phases": per_phase(shifted, spans),
            "timeline": [{"at": s.at, **s.cores} for s in shifted],
        }
