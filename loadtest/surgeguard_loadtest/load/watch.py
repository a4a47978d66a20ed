"""Watching the service while a load test runs: the server-side truth.

Three samplers, each a daemon thread in the load runner's process (not Locust's, so
a saturated load generator cannot starve them of their schedule as badly):

- ``MetricsWatch`` scrapes the target's ``/metrics`` every second and keeps one
  ``Window`` per second: offered, admitted, good, rejected, 5xx, latency, the limit,
  the replica's memory.
- ``HealthWatch`` asks ``/healthz`` every half second and keeps each answer's time:
  the liveness check must stay fast however hard the service is pushed.
- ``KnobWatch`` reads the controller's ``/api/v1/state`` every second and keeps the
  knobs it has published (what ``--tune`` reports as converged) and its modes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import Signals, compute

SLO_S = 0.25
TIMEOUT = httpx.Timeout(5.0, connect=2.0)  # seconds


@dataclass(frozen=True)
class Window:
    """One second as the server saw it. ``at``: seconds since the run started (the
    window's end); rates per second; latencies in ms (None without traffic)."""

    at: float
    offered_per_s: float
    admitted_per_s: float
    good_per_s: float
    rejected_per_s: float
    errors_per_s: float  # 5xx other than the deliberate 503s
    unavailable_per_s: float  # deliberate 503s from a saturated or down dependency
    p50_ms: float | None
    p99_ms: float | None
    limit: float
    queue_limit: float
    peak_in_flight: float
    rss_mb: float | None
    # rejected per second by the door's reason (queue_full, penalty, ...)
    rejected_by_reason: Mapping[str, float] = field(default_factory=dict)
    modes_active: tuple[str, ...] = ()  # the replica's surgeguard_mode_active == 1
    # The limit the door enforces (its inner loop's, under ``limit``, the knob); None
    # from a replica that does not export it.
    inner_limit: float | None = None
    # The replica process's CPU (cores: 1.0 is one core busy all the second); None
    # without process metrics.
    cpu_cores: float | None = None


def ms_or_none(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


def window_between(before: Scrape, now: Scrape, origin: float, slo_s: float = SLO_S) -> Window:
    """The ``Window`` of two scrapes (``origin``: the run's start, same clock)."""
    s = compute("watch", before, now, slo_s=slo_s)
    rss = now.total("process_resident_memory_bytes")
    return Window(
        at=round(now.at - origin, 2),
        offered_per_s=round(s.offered_per_s, 1),
        admitted_per_s=round(s.admitted_per_s, 1),
        good_per_s=round(s.good_per_s, 1),
        rejected_per_s=round(s.rejected_total_per_s, 1),
        errors_per_s=round(s.server_error_rate * s.admitted_per_s, 2),
        unavailable_per_s=round(_unavailable_rate(s) * s.admitted_per_s, 2),
        p50_ms=ms_or_none(s.p50_s),
        p99_ms=ms_or_none(s.p99_s),
        limit=s.concurrency_limit,
        queue_limit=s.queue_limit,
        peak_in_flight=s.peak_in_flight,
        rss_mb=round(rss / 2**20, 1) if rss else None,
        rejected_by_reason={r: round(v, 1) for r, v in sorted(s.rejected_per_s.items()) if v},
        modes_active=tuple(
            sorted(m for m, v in now.by_label("surgeguard_mode_active", "mode").items() if v)
        ),
        inner_limit=None if math.isnan(s.inner_limit) else s.inner_limit,
        cpu_cores=None if math.isnan(s.cpu_utilisation) else round(s.cpu_utilisation, 3),
    )


def _unavailable_rate(s: Signals) -> float:
    """The deliberate 503s among admitted, 0..1: every 5xx less the real errors."""
    return max(0.0, s.error_rate - s.server_error_rate)


def span_totals(first: Scrape, last: Scrape, slo_s: float = SLO_S) -> dict[str, Any]:
    """Counts and latency over a whole span (two scrapes), server side."""
    s = compute("span", first, last, slo_s=slo_s)
    admitted = s.admitted_per_s * s.window_s
    return {
        "seconds": round(s.window_s, 1),
        "admitted": round(admitted),
        "good": round(s.good_per_s * s.window_s),
        "rejected": {r: round(v * s.window_s) for r, v in s.rejected_per_s.items() if v},
        "errors_5xx": round(s.server_error_rate * admitted),
        "unavailable_503": round(_unavailable_rate(s) * admitted),
        "p50_ms": ms_or_none(s.p50_s),
        "p99_ms": ms_or_none(s.p99_s),
        "goodput_per_s": round(s.good_per_s, 1),
    }


class _Poller(threading.Thread):
    """Calls ``step`` every ``period_s`` seconds until stopped; a failing step is
    counted, never fatal (the service under test is allowed to struggle)."""

    def __init__(self, name: str, period_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.period_s = period_s
        self.failures = 0
        self._stop_event = threading.Event()
        self.http = httpx.Client(timeout=TIMEOUT, trust_env=False)

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.step()
            except (httpx.HTTPError, ValueError):
                self.failures += 1
            next_at += self.period_s
            self._stop_event.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self.http.close()


class MetricsWatch(_Poller):
    def __init__(
        self,
        url: str,
        origin: float,
        slo_s: float = SLO_S,
        period_s: float = 1.0,
        keep_scrapes: bool = False,
    ) -> None:
        """``keep_scrapes``: keep every scrape (a benchmark's spans need them; a long
        soak should not hold an hour of them)."""
        super().__init__("metrics-watch", period_s)
        self.keep_scrapes = keep_scrapes
        self.scrapes: list[Scrape] = []
        self.url = url.rstrip("/")
        self.origin = origin
        self.slo_s = slo_s
        self.windows: list[Window] = []
        self.first: Scrape | None = None
        self.last: Scrape | None = None
        self.listeners: list[Callable[[Window], None]] = []

    def scrape(self) -> Scrape:
        text = self.http.get(f"{self.url}/metrics").raise_for_status().text
        return Scrape.from_text(text, time.monotonic())

    def step(self) -> None:
        now = self.scrape()
        if self.last is not None:
            window = window_between(self.last, now, self.origin, self.slo_s)
            self.windows.append(window)
            for listener in self.listeners:
                listener(window)
        if self.keep_scrapes:
            self.scrapes.append(now)
        if self.first is None:
            self.first = now
        self.last = now


@dataclass(frozen=True)
class Probe:
    """One ``/healthz`` probe: ``at`` seconds since the run started (when it was
    sent), how long it took (ms), and whether it answered 200."""

    at: float
    ms: float
    ok: bool


class HealthWatch(_Poller):
    def __init__(self, url: str, period_s: float = 0.5, origin: float | None = None) -> None:
        """``origin``: the run's start on the monotonic clock (probes' ``at``)."""
        super().__init__("health-watch", period_s)
        self.url = url.rstrip("/") + "/healthz"
        self.origin = time.monotonic() if origin is None else origin
        self.latencies_ms: list[float] = []
        self.probes: list[Probe] = []
        self.bad = 0  # answered, but not 200

    def step(self) -> None:
        sent = time.monotonic()
        started = time.perf_counter()
        ok = False
        try:
            response = self.http.get(self.url)
            ok = response.status_code == 200
        finally:
            ms = (time.perf_counter() - started) * 1000
            self.latencies_ms.append(ms)
            self.probes.append(Probe(round(sent - self.origin, 2), round(ms, 1), ok))
        if not ok:
            self.bad += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def q(p: float) -> float | None:
            return (
                round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None
            )

        return {
            "probes": len(ordered),
            "failed": self.failures + self.bad,
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "note": "client-side, from the load runner's process on the same machine",
        }


class KnobWatch(_Poller):
    """The controller's published knobs once a second: ``samples`` is a list of
    (seconds since the run started, {knob: value})."""

    def __init__(self, controller_url: str, origin: float, period_s: float = 1.0) -> None:
        super().__init__("knob-watch", period_s)
        self.url = controller_url.rstrip("/") + "/api/v1/state"
        self.origin = origin
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.modes: list[tuple[float, tuple[str, ...]]] = []  # (at, modes it published)
        self.autopilot: bool | None = None

    def step(self) -> None:
        state = self.http.get(self.url).raise_for_status().json()
        control = state.get("control") or {}
        self.autopilot = control.get("autopilot")
        # What the replicas report they run with wins over what was published.
        knobs = {k: float(v) for k, v in (control.get("knobs") or {}).items()}
        for replica in (state.get("replicas") or {}).values():
            for knob, value in (replica.get("knobs") or {}).items():
                if isinstance(value, int | float):
                    knobs[knob] = float(value)
        at = round(time.monotonic() - self.origin, 2)
        self.samples.append((at, knobs))
        self.modes.append((at, tuple(sorted(str(m) for m in control.get("modes") or ()))))
