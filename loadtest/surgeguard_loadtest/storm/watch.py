"""The storm benchmark's watchers, with every probe's time kept.

During a storm the question is not only what the replica served but whether it stayed
answerable: how long each ``/metrics`` scrape took (the controller's eyes) and each
``/healthz`` probe (a liveness check's). Both keep a timed record per probe, so the
benchmark can slice them by phase afterwards, and both wait far longer than the
ordinary watchers before giving up, so a slow answer is measured, not just failed.

``TimedMetricsWatch`` is ``watch.py``'s scraper, timing the request only (not the
parsing). ``HealthProbe`` runs ``storm/probe.py`` in its own process: in this one,
the scraper's parsing holds the GIL for tens of ms and would show up as /healthz
latency.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx

from surgeguard.runtime.process import die_with_parent
from surgeguard.runtime.process import terminate as stop
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_loadtest.load.watch import MetricsWatch

PROBE_TIMEOUT_S = 15.0  # a probe slower than this counts as failed, seconds
HEALTH_EVERY_S = 0.25


@dataclass(frozen=True)
class Probe:
    """One request of a watcher: when it was sent (monotonic seconds), how long it
    took (seconds) and whether it was answered as expected."""

    at: float
    seconds: float
    ok: bool


def _patient_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(PROBE_TIMEOUT_S), trust_env=False)


class TimedMetricsWatch(MetricsWatch):
    """Scrapes ``/metrics`` every second, keeps every scrape and every scrape's time."""

    def __init__(self, url: str, origin: float) -> None:
        super().__init__(url, origin, keep_scrapes=True)
        self.http.close()
        self.http = _patient_client()
        self.timings: list[Probe] = []

    def scrape(self) -> Scrape:
        started = time.monotonic()
        ok = False
        try:
            text = self.http.get(f"{self.url}/metrics").raise_for_status().text
            ok = True
        finally:
            answered = time.monotonic()
            self.timings.append(Probe(started, answered - started, ok))
        return Scrape.from_text(text, answered)


class HealthProbe(threading.Thread):
    """``/healthz`` every ``period_s`` seconds from its own process (a new connection
    each time, as a Kubernetes probe does; ``keep_alive``: one kept-alive connection);
    ``probes`` fills as answers come. Start it
    from a long-lived thread (the prober dies with the thread that started it)."""

    def __init__(
        self, url: str, period_s: float = HEALTH_EVERY_S, *, keep_alive: bool = False
    ) -> None:
        super().__init__(name="health-probe", daemon=True)
        self.probes: list[Probe] = []
        command = [
            sys.executable,
            "-m",
            "surgeguard_loadtest.storm.probe",
            url.rstrip("/") + "/healthz",
        ]
        command += [str(period_s), *(["--keep-alive"] if keep_alive else [])]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(),
        )

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at, seconds, status = line.split()
            self.probes.append(Probe(float(at), float(seconds), status == "200"))

    def stop(self) -> None:
        stop(self.process, timeout_s=2.0)
        self.join(timeout=5)
