"""The storm benchmark's watchers: ``watch.py``'s, with every probe's time kept.

During a storm the question is not only what the replica served but whether it stayed
answerable: how long each ``/metrics`` scrape took (the controller's eyes) and each
``/healthz`` probe (a liveness check's). Both keep a timed record per probe, so the
benchmark can slice them by phase afterwards, and both wait far longer than the
ordinary watchers before giving up, so a slow answer is measured, not just failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from controller.scrape import Scrape
from loadtest.watch import HealthWatch, MetricsWatch

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
            scrape = super().scrape()
            ok = True
            return scrape
        finally:
            self.timings.append(Probe(started, time.monotonic() - started, ok))


class TimedHealthWatch(HealthWatch):
    """Asks ``/healthz`` every quarter second and keeps each answer's time."""

    def __init__(self, url: str, period_s: float = HEALTH_EVERY_S) -> None:
        super().__init__(url, period_s)
        self.http.close()
        self.http = _patient_client()
        self.probes: list[Probe] = []

    def step(self) -> None:
        started = time.monotonic()
        ok = False
        try:
            ok = self.http.get(self.url).status_code == 200
        finally:
            self.probes.append(Probe(started, time.monotonic() - started, ok))
