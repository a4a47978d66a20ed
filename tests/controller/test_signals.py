"""Signals computed from two real scrapes of the service's own metric families."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from surgeguard.bulkhead import DependencyMetrics
from surgeguard.limiter import Limiter
from surgeguard.loop_lag import LoopLagMonitor
from surgeguard.metrics import AdmissionMetrics
from surgeguard.priority import Priority
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import aggregate, compute

SLO = 0.25


class Replica:
    """The metric families a target replica exports, driven by hand."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = AdmissionMetrics(self.registry, slo_seconds=SLO, routes=["feed"])
        self.limiter = Limiter(40, 80, 0.2)
        self.metrics.bind_limiter(self.limiter)
        self.deps = DependencyMetrics(self.registry, slo_seconds=SLO)
        self.deps.limit.labels("db").set(10)
        self.deps.inflight.labels("db").set(0)

    def serve(self, n: int, seconds: float, outcome: str = "ok") -> None:
        for _ in range(n):
            self.metrics.duration[("feed", outcome)].observe(seconds)
            self.metrics.requests[("feed", Priority.NORMAL, outcome)].inc()

    def reject(self, n: int, reason: str) -> None:
        self.metrics.rejections[(reason, Priority.SHEDDABLE)].inc(n)

    def db(self, n: int, seconds: float, outcome: str = "ok") -> None:
        for _ in range(n):
            self.deps.duration.labels("db", outcome).observe(seconds)

    def scrape(self, at: float) -> Scrape:
        return Scrape.from_text(generate_latest(self.registry).decode(), at)


def test_window_rates_and_quantiles_come_from_deltas() -> None:
    r = Replica()
    r.serve(1000, 0.01)  # history before the window must not count
    before = r.scrape(at=100.0)
    r.serve(90, 0.02)
    r.serve(10, 0.4)  # 10% slow: p99 lands in the slow bucket
    r.serve(5, 0.03, outcome="unavailable")
    r.serve(3, 0.03, outcome="error")
    r.reject(50, "queue_full")
    after = r.scrape(at=102.0)
    s = compute("a", before, after, slo_s=SLO)
    assert s.window_s == pytest.approx(2.0)
    assert s.admitted_per_s == pytest.approx(108 / 2)
    assert s.good_per_s == pytest.approx(90 / 2)  # the slow and the 5xx are not good
    assert s.rejected_per_s["queue_full"] == pytest.approx(25.0)
    assert s.error_rate == pytest.approx(8 / 108)  # every 5xx
    assert s.server_error_rate == pytest.approx(3 / 108)  # not the deliberate 503s
    assert 0.3 < s.p99_s <= 0.4  # rank 106.9 of 108 is in (0.3, 0.4]
    assert s.p50_s == pytest.approx(0.015 + 0.01 * (54 - 0) / 90, rel=0.3)
    assert s.mean_in_flight == pytest.approx((90 * 0.02 + 10 * 0.4 + 8 * 0.03) / 2)
    assert s.concurrency_limit == 40 and s.queue_limit == 80


def test_a_restarted_replica_does_not_produce_negative_rates() -> None:
    old = Replica()
    old.serve(5000, 0.01)
    before = old.scrape(at=10.0)
    restarted = Replica()
    restarted.serve(20, 0.05)
    s = compute("a", before, restarted.scrape(at=11.0), slo_s=SLO)
    assert s.admitted_per_s == pytest.approx(20.0)
    assert 0.025 < s.p50_s <= 0.05


def test_no_traffic_gives_nan_latency_not_zero() -> None:
    r = Replica()
    before = r.scrape(at=0.0)
    s = compute("a", before, r.scrape(at=1.0), slo_s=SLO)
    assert math.isnan(s.p99_s)
    assert s.admitted_per_s == 0.0


def test_dependency_signals() -> None:
    r = Replica()
    before = r.scrape(at=0.0)
    r.db(80, 0.05)
    r.db(20, 2.0, outcome="timeout")
    r.deps.rejections.labels("db", "full").inc(30)
    s = compute("a", before, r.scrape(at=1.0), slo_s=SLO).dependencies["db"]
    assert s.calls_per_s == pytest.approx(100)
    assert s.timeout_rate == pytest.approx(0.2)
    assert s.rejected_per_s == pytest.approx(30)
    assert s.mean_in_flight == pytest.approx(80 * 0.05 + 20 * 2.0)
    assert s.utilisation == pytest.approx(s.mean_in_flight / 10)


def test_dependency_latency_comes_from_the_calls_that_succeeded() -> None:
    # A database out of connections refuses in a millisecond: half the calls failing
    # fast must not make the median (the healthy baseline) a millisecond.
    r = Replica()
    before = r.scrape(at=0.0)
    r.db(50, 0.075)
    r.db(50, 0.001, outcome="error")
    s = compute("a", before, r.scrape(at=1.0), slo_s=SLO).dependencies["db"]
    assert 0.05 < s.p50_s <= 0.1
    assert s.error_rate == pytest.approx(0.5)
    # When nothing succeeded, the failed calls' times are the latency there is.
    before = r.scrape(at=1.0)
    r.db(10, 2.0, outcome="timeout")
    s = compute("a", before, r.scrape(at=2.0), slo_s=SLO).dependencies["db"]
    assert s.p50_s > 1.0
    assert s.timeout_rate == pytest.approx(1.0)


def test_aggregate_sums_replicas_like_promql_sum() -> None:
    a, b = Replica(), Replica()
    a_before, b_before = a.scrape(at=0.0), b.scrape(at=0.0)
    a.serve(100, 0.01)
    b.serve(100, 0.4)
    total = aggregate([(a_before, a.scrape(at=1.0)), (b_before, b.scrape(at=1.0))], slo_s=SLO)
    assert total.admitted_per_s == pytest.approx(200)
    assert total.concurrency_limit == 80  # two limits of 40
    assert 0.3 < total.p99_s <= 0.4
    assert total.p50_s <= 0.3


def test_job_queues_are_shared_so_replicas_report_them_once() -> None:
    """Every replica reads the same Redis streams: the aggregate takes their value,
    not the sum of what each replica repeats."""
    text = (
        'surgeguard_jobs_pending{stream="surgeguard:jobs:email"} 120\n'
        'surgeguard_jobs_oldest_pending_age_seconds{stream="surgeguard:jobs:email"} 42.5\n'
        "surgeguard_jobs_dead_letters 3\n"
    )
    a, b = Replica(), Replica()
    windows = []
    for r in (a, b):
        extra = r.scrape(at=0.0).samples
        now = Scrape.from_text(generate_latest(r.registry).decode() + text, 1.0)
        windows.append((Scrape(0.0, extra), now))
    one = compute("a", *windows[0], slo_s=SLO)
    assert one.jobs_pending == {"surgeguard:jobs:email": 120}
    assert one.jobs_lag_s == {"surgeguard:jobs:email": 42.5} and one.jobs_dead == 3
    total = aggregate(windows, slo_s=SLO)
    assert total.jobs_pending == {"surgeguard:jobs:email": 120}
    assert total.jobs_lag_s == {"surgeguard:jobs:email": 42.5} and total.jobs_dead == 3


class BusyReplica(Replica):
    """A replica that also exports its loop lag (the service's ``LoopLagMonitor``) and
    its CPU as prometheus_client's ``ProcessCollector`` does (process_cpu_seconds_total)."""

    def __init__(self) -> None:
        super().__init__()
        self.lag = LoopLagMonitor(self.registry)
        self.cpu = Counter("process_cpu_seconds", "CPU seconds.", registry=self.registry)

    def lagged(self, n: int, seconds: float) -> None:
        for _ in range(n):
            self.lag.histogram.observe(seconds)


def test_loop_lag_and_cpu_come_from_the_window() -> None:
    r = BusyReplica()
    r.lagged(500, 0.3)  # history before the window must not count
    r.cpu.inc(40.0)
    before = r.scrape(at=10.0)
    text = generate_latest(r.registry).decode()
    assert "surgeguard_event_loop_lag_seconds_bucket" in text
    assert "process_cpu_seconds_total" in text
    r.lagged(30, 0.001)
    r.lagged(10, 0.18)  # a quarter of the wakeups were late by 180 ms
    r.cpu.inc(0.7)  # 0.35 CPU seconds per second over 2 s
    s = compute("a", before, r.scrape(at=12.0), slo_s=SLO)
    assert 0.15 < s.loop_lag_p99_s <= 0.2
    assert s.cpu_utilisation == pytest.approx(0.35)


def test_loop_lag_and_cpu_are_nan_when_not_exported() -> None:
    r = Replica()
    before = r.scrape(at=0.0)
    r.serve(10, 0.01)
    s = compute("a", before, r.scrape(at=1.0), slo_s=SLO)
    assert math.isnan(s.loop_lag_p99_s) and math.isnan(s.cpu_utilisation)


def test_aggregate_merges_loop_lag_and_keeps_the_busiest_cpu() -> None:
    """Lag histograms add up like any histogram; CPU is a per-process question ("is
    this process saturated?"), so the aggregate keeps the busiest replica's, not a sum."""
    a, b = BusyReplica(), BusyReplica()
    a_before, b_before = a.scrape(at=0.0), b.scrape(at=0.0)
    a.lagged(100, 0.001)
    b.lagged(100, 0.4)
    a.cpu.inc(0.3)
    b.cpu.inc(0.6)
    total = aggregate([(a_before, a.scrape(at=1.0)), (b_before, b.scrape(at=1.0))], slo_s=SLO)
    assert 0.3 < total.loop_lag_p99_s <= 0.4
    assert total.cpu_utilisation == pytest.approx(0.6)
    plain = Replica()
    only_one = aggregate(
        [(a_before, a.scrape(at=1.0)), (plain.scrape(at=0.0), plain.scrape(at=1.0))], slo_s=SLO
    )
    assert only_one.cpu_utilisation == pytest.approx(0.3)


def test_penalty_box_signals_come_from_the_window() -> None:
    """Issue 11: requests held because their client ignored Retry-After (a gauge) and
    how many were held per second (a counter's rate); 0 when not exported."""
    r = Replica()
    plain = compute("a", r.scrape(at=0.0), r.scrape(at=1.0), slo_s=SLO)
    assert (plain.penalty_held, plain.penalty_holds_per_s) == (0.0, 0.0)

    def with_box(held: float, holds: float, at: float) -> Scrape:
        text = f"surgeguard_penalty_box_held {held}\nsurgeguard_penalty_box_holds_total {holds}\n"
        return Scrape.from_text(generate_latest(r.registry).decode() + text, at)

    before, now = with_box(10, 1000, at=10.0), with_box(250, 1600, at=12.0)
    s = compute("a", before, now, slo_s=SLO)
    assert s.penalty_held == 250
    assert s.penalty_holds_per_s == pytest.approx(300)
    total = aggregate([(before, now), (before, now)], slo_s=SLO)
    assert total.penalty_held == 500  # held requests add up across replicas
    assert total.penalty_holds_per_s == pytest.approx(600)
