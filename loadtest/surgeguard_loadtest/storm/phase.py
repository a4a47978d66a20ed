"""The wrk side of a ``storm`` load run: impatient connections beside Locust's polite users.

Each wrk connection sends its next request the moment the last one is answered: it
ignores ``Retry-After`` entirely, the way a naive retry loop does, and one wrk process
holds thousands of such connections where Locust could hold only a few hundred users
on two cores. They all use one valid client key (one client, many connections).

The storm starts when Locust's clock reaches the scenario's storm start and lasts
until its end; a run stopped early interrupts wrk, which still reports what it did.
Its numbers are client-side (wrk's): requests, non-2xx answers, latency.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from surgeguard_loadtest.load.locust_process import LocustOutput
from surgeguard_loadtest.scenarios import Scenario
from surgeguard_loadtest.wrk import (
    WRK_GRACE_S,
    WrkError,
    WrkParseError,
    WrkProcess,
    WrkResult,
    wrk_command,
)

OPEN_FILES_SPARE = 1_000  # descriptors beyond the storm's connections, for everything else


class StormError(ValueError):
    """A storm that cannot run; the message names the option and what it allows."""


@dataclass(frozen=True)
class StormOptions:
    """``connections`` impatient connections over ``threads`` wrk threads, all sending
    ``GET path`` with ``X-Api-Key: key``."""

    connections: int = 2_000
    threads: int = 2
    path: str = "/feed"
    key: str = "demo-key"

    def check(self) -> None:
        if self.threads < 1:
            raise StormError(f"--storm-threads must be >= 1, got {self.threads}")
        if self.connections < self.threads:
            raise StormError(
                f"--storm-connections must be >= --storm-threads ({self.threads}), "
                f"got {self.connections}"
            )
        if not self.path.startswith("/"):
            raise StormError(f"the storm's path must start with '/', got {self.path!r}")
        if shutil.which("wrk") is None:
            raise StormError("the storm scenario needs wrk on PATH (apt-get install wrk)")


def command(host: str, options: StormOptions, duration_s: float) -> list[str]:
    """The storm's wrk command. Its timeout is the storm's whole duration, so a request
    held for a long time still counts in the latency figures."""
    return wrk_command(
        host.rstrip("/") + options.path,
        [("X-Api-Key", options.key)],
        connections=options.connections,
        duration_s=duration_s,
        threads=options.threads,
        timeout_s=max(duration_s, 1.0),
    )


class StormRun(threading.Thread):
    """Runs the storm on Locust's clock. ``stop`` ends it early (or skips it);
    ``summary`` says what it did. The thread lives as long as wrk does (wrk dies with
    the thread that started it)."""

    def __init__(
        self,
        host: str,
        scenario: Scenario,
        options: StormOptions,
        locust: LocustOutput,
        warn: Callable[[str], None],
    ) -> None:
        super().__init__(name="storm", daemon=True)
        if scenario.storm_s is None:
            raise StormError(f"scenario {scenario.name} has no storm")
        self.host = host
        self.options = options
        self.start_s, self.end_s = scenario.storm_s
        self.locust = locust
        self.warn = warn
        self.result: WrkResult | None = None
        self.error: str | None = None
        self.started_at_s: float | None = None  # on Locust's clock
        self._process: WrkProcess | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self.locust.started.wait(0.2):
            if self._stop_event.is_set():
                return
        due = self.locust.started_mono + self.start_s
        if self._stop_event.wait(max(0.0, due - time.monotonic())):
            return
        duration_s = max(1.0, self.locust.started_mono + self.end_s - time.monotonic())
        with self._lock:
            if self._stop_event.is_set():
                return
            self.started_at_s = round(time.monotonic() - self.locust.started_mono, 2)
            process = self._process = WrkProcess(
                command(self.host, self.options, duration_s), duration_s
            )
        try:
            self.result = process.result()
        except (WrkError, WrkParseError) as exc:
            self.error = str(exc).splitlines()[0]
            self.warn(f"storm: {self.error}")

    def stop(self) -> None:
        """End the storm now (wrk reports what it did); wait for its report."""
        with self._lock:
            self._stop_event.set()
            if self._process is not None:
                self._process.interrupt()
        if self.is_alive():
            self.join(timeout=WRK_GRACE_S)

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "note": "client-side, wrk: impatient connections that ignore Retry-After",
            "connections": self.options.connections,
            "threads": self.options.threads,
            "url": self.host.rstrip("/") + self.options.path,
            "key": self.options.key,
            "planned_s": [self.start_s, self.end_s],
            "started_at_s": self.started_at_s,
            "seconds": round(r.duration_s, 2) if r else None,
            "requests": r.requests if r else 0,
            "requests_per_s": round(r.requests_per_s, 1) if r else 0.0,
            "non_2xx_3xx": r.non_2xx_3xx if r else 0,
            "ok": r.requests - r.non_2xx_3xx if r else 0,
            "socket_errors": r.socket_errors if r else {},
            "latency_avg_ms": r.latency_avg_ms if r else None,
            "latency_ms": r.latency_percentiles_ms if r else {},
            "error": self.error
            if self.error or r
            else ("stopped before it started" if self.started_at_s is None else "no report"),
        }
