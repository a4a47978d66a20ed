"""Signals: what one replica lived through between two scrapes.

Counters and histograms become per-second rates and windowed quantiles from their
deltas (a restarted replica's counter reset counts as "everything is new"); gauges
are read as they are. ``aggregate`` folds several replicas into one view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from surgeguard import metric_names as names
from surgeguard_controller.sensing.quantile import Bucket, bucket_deltas, histogram_quantile
from surgeguard_controller.sensing.scrape import Scrape


@dataclass(frozen=True)
class DependencySignals:
    """One dependency in one window. Latencies in seconds, rates per second,
    utilisation and error/timeout rates 0..1 (utilisation may exceed 1 briefly)."""

    name: str
    p50_s: float
    p99_s: float
    calls_per_s: float
    mean_in_flight: float
    in_flight: float
    limit: float
    utilisation: float
    error_rate: float
    timeout_rate: float
    rejected_per_s: float


@dataclass(frozen=True)
class Signals:
    """One replica (or the aggregate) over one window of ``window_s`` seconds."""

    replica: str
    window_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    admitted_per_s: float
    good_per_s: float  # admitted, answered without a 5xx, inside the SLO bucket
    rejected_per_s: Mapping[str, float]
    error_rate: float  # 5xx among admitted, 0..1
    in_flight: float
    peak_in_flight: float
    mean_in_flight: float
    concurrency_limit: float
    queue_depth: float
    queue_limit: float
    queue_timeout_s: float
    queue_wait_p99_s: float
    dependencies: Mapping[str, DependencySignals] = field(default_factory=dict)
    jobs_pending: Mapping[str, float] = field(default_factory=dict)
    jobs_lag_s: Mapping[str, float] = field(default_factory=dict)  # oldest job's age
    jobs_dead: float = 0.0  # jobs in the dead-letter stream
    # How late the replica's event-loop timer fired, p99 over the window, seconds
    # (NaN: not exported, or no wakeup in the window). Part of every admitted latency.
    loop_lag_p99_s: float = math.nan
    # CPU the replica's process used over the window, cores (1.0 = one full core;
    # NaN: not exported). In the aggregate: the busiest replica's.
    cpu_utilisation: float = math.nan
    # 5xx among admitted other than the deliberate 503s (a dependency's bulkhead full
    # or timed out, the service unavailable): what the concurrency limit reacts to, 0..1.
    server_error_rate: float = 0.0
    # Requests held in the penalty box now (their client came back before its
    # Retry-After), and how many per second were held over the window; 0 when the
    # replica does not export them.
    penalty_held: float = 0.0
    penalty_holds_per_s: float = 0.0
    # The concurrency limit the replica's door enforces now (its inner loop's, under the
    # concurrency_limit knob; the knob's without one), requests; NaN: not exported.
    inner_limit: float = math.nan
    stale: bool = False

    @property
    def rejected_total_per_s(self) -> float:
        return sum(self.rejected_per_s.values())

    @property
    def offered_per_s(self) -> float:
        return self.admitted_per_s + self.rejected_total_per_s


def _rate(now: Scrape, before: Scrape, name: str, window_s: float, **where: str) -> float:
    current, previous = now.total(name, **where), before.total(name, **where)
    delta = current if current < previous else current - previous  # reset: all new
    return delta / window_s if window_s > 0 else 0.0


def _window_buckets(now: Scrape, before: Scrape, hist: str, **where: str) -> list[Bucket]:
    return bucket_deltas(now.buckets(hist, **where), before.buckets(hist, **where) or None)


def _count_below(buckets: Sequence[Bucket], bound: float) -> float:
    """Observations at or below ``bound`` (needs a bucket edge there)."""
    return max((c for b, c in buckets if b <= bound + 1e-12), default=0.0)


def compute(replica: str, before: Scrape, now: Scrape, *, slo_s: float) -> Signals:
    window = max(1e-9, now.at - before.at)
    requests = _window_buckets(now, before, names.REQUEST_DURATION_SECONDS)
    admitted = requests[-1][1] if requests else 0.0
    fine = _window_buckets(now, before, names.REQUEST_DURATION_SECONDS, outcome="ok")
    client = _window_buckets(now, before, names.REQUEST_DURATION_SECONDS, outcome="client_error")
    good = _count_below(fine, slo_s) + _count_below(client, slo_s)
    errors = admitted - (fine[-1][1] if fine else 0.0) - (client[-1][1] if client else 0.0)
    reasons = now.label_values(names.REJECTIONS_TOTAL, "reason")
    rejected = {
        r: _rate(now, before, names.REJECTIONS_TOTAL, window, reason=r) for r in sorted(reasons)
    }
    # Little's law: the mean in flight is the busy time per second
    busy_s = _rate(now, before, f"{names.REQUEST_DURATION_SECONDS}_sum", window)
    queue = _window_buckets(now, before, names.QUEUE_WAIT_SECONDS)
    return Signals(
        replica=replica,
        window_s=window,
        p50_s=histogram_quantile(0.50, requests),
        p95_s=histogram_quantile(0.95, requests),
        p99_s=histogram_quantile(0.99, requests),
        admitted_per_s=admitted / window,
        good_per_s=good / window,
        rejected_per_s=rejected,
        error_rate=max(0.0, errors) / admitted if admitted else 0.0,
        in_flight=now.total(names.INFLIGHT),
        peak_in_flight=max(now.total(names.INFLIGHT_PEAK), busy_s),
        mean_in_flight=busy_s,
        concurrency_limit=now.total(names.CONCURRENCY_LIMIT),
        queue_depth=now.total(names.QUEUE_DEPTH),
        queue_limit=now.total(names.QUEUE_LIMIT),
        queue_timeout_s=now.total(names.QUEUE_TIMEOUT_SECONDS),
        queue_wait_p99_s=histogram_quantile(0.99, queue),
        dependencies={
            d: _dependency(d, before, now, window)
            for d in sorted(now.label_values(names.DEPENDENCY_LIMIT, "dependency"))
        },
        jobs_pending=now.by_label(names.JOBS_PENDING, "stream"),
        jobs_lag_s=now.by_label(names.JOBS_OLDEST_PENDING_AGE_SECONDS, "stream"),
        jobs_dead=now.total(names.JOBS_DEAD_LETTERS),
        loop_lag_p99_s=histogram_quantile(
            0.99, _window_buckets(now, before, names.EVENT_LOOP_LAG_SECONDS)
        ),
        cpu_utilisation=_cpu(before, now, window),
        server_error_rate=_count(
            _window_buckets(now, before, names.REQUEST_DURATION_SECONDS, outcome="error")
        )
        / admitted
        if admitted
        else 0.0,
        penalty_held=now.total(names.PENALTY_BOX_HELD),
        penalty_holds_per_s=_rate(now, before, names.PENALTY_BOX_HOLDS_TOTAL, window),
        inner_limit=now.total(names.INNER_LIMIT) if _exported(now, names.INNER_LIMIT) else math.nan,
    )


def _exported(scrape: Scrape, name: str) -> bool:
    return any(key[0] == name for key in scrape.samples)


def _count(buckets: Sequence[Bucket]) -> float:
    """Observations in a window's histogram (its +Inf bucket)."""
    return buckets[-1][1] if buckets else 0.0


def _cpu(before: Scrape, now: Scrape, window: float) -> float:
    """Cores used over the window (CPU seconds per second); NaN when not exported."""
    if not any(name == names.PROCESS_CPU_SECONDS_TOTAL for name, _ in now.samples):
        return math.nan
    return _rate(now, before, names.PROCESS_CPU_SECONDS_TOTAL, window)


def _dependency(name: str, before: Scrape, now: Scrape, window: float) -> DependencySignals:
    hist = _window_buckets(now, before, names.DEPENDENCY_DURATION_SECONDS, dependency=name)
    calls = hist[-1][1] if hist else 0.0
    errors = _window_buckets(
        now, before, names.DEPENDENCY_DURATION_SECONDS, dependency=name, outcome="error"
    )
    timeouts = _window_buckets(
        now, before, names.DEPENDENCY_DURATION_SECONDS, dependency=name, outcome="timeout"
    )
    # Latency from the calls that succeeded: a call refused at once (a database out of
    # connections answers in a millisecond) would pull the median, and so the healthy
    # baseline, far below the work a call really takes, and then every normal call
    # would look inflated. Only when nothing succeeded (all timed out or failed) do
    # the failed calls' times stand for the latency.
    ok = _window_buckets(
        now, before, names.DEPENDENCY_DURATION_SECONDS, dependency=name, outcome="ok"
    )
    timed = ok if ok and ok[-1][1] > 0 else hist
    busy = _rate(now, before, f"{names.DEPENDENCY_DURATION_SECONDS}_sum", window, dependency=name)
    limit = now.total(names.DEPENDENCY_LIMIT, dependency=name)
    in_flight = now.total(names.DEPENDENCY_INFLIGHT, dependency=name)
    return DependencySignals(
        name=name,
        p50_s=histogram_quantile(0.50, timed),
        p99_s=histogram_quantile(0.99, timed),
        calls_per_s=calls / window,
        mean_in_flight=busy,
        in_flight=in_flight,
        limit=limit,
        utilisation=max(busy, in_flight) / limit if limit else 0.0,
        error_rate=(errors[-1][1] if errors else 0.0) / calls if calls else 0.0,
        timeout_rate=(timeouts[-1][1] if timeouts else 0.0) / calls if calls else 0.0,
        rejected_per_s=_rate(
            now, before, names.DEPENDENCY_REJECTIONS_TOTAL, window, dependency=name
        ),
    )


def stale(replica: str) -> Signals:
    """A replica that could not be read this tick: no numbers, no moves."""
    nan = math.nan
    return Signals(
        replica,
        0.0,
        nan,
        nan,
        nan,
        0.0,
        0.0,
        {},
        0.0,
        nan,
        nan,
        nan,
        nan,
        nan,
        nan,
        nan,
        nan,
        stale=True,
    )


_CUMULATIVE_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
_SHARED_GAUGES = (
    names.JOBS_PENDING,
    names.JOBS_OLDEST_PENDING_AGE_SECONDS,
    names.JOBS_DEAD_LETTERS,
    names.JOBS_BACKLOG_LIMIT,
)


def window_delta(before: Scrape, now: Scrape) -> Scrape:
    """One replica's window as a scrape of increments (gauges as read now), so several
    replicas' windows can be summed without one replica's reset spoiling the sum."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for key, value in now.samples.items():
        if key[0].endswith(_CUMULATIVE_SUFFIXES):
            previous = before.samples.get(key, 0.0)
            samples[key] = value if value < previous else value - previous
        else:
            samples[key] = value
    return Scrape(now.at - before.at, samples)


def aggregate(windows: Sequence[tuple[Scrape, Scrape]], *, slo_s: float) -> Signals:
    """All replicas as one: rates and histograms summed (like PromQL ``sum``), gauges
    summed (limits and in-flight add up across replicas)."""
    summed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    spans = []
    for before, now in windows:
        delta = window_delta(before, now)
        spans.append(delta.at)
        for key, value in delta.samples.items():
            if key[0].startswith(_SHARED_GAUGES):
                # Every replica reports the same shared queues: one value, not a sum.
                summed[key] = max(summed.get(key, 0.0), value)
            else:
                summed[key] = summed.get(key, 0.0) + value
    window = sum(spans) / len(spans) if spans else 1.0
    total = compute("all", Scrape(0.0), Scrape(window, summed), slo_s=slo_s)
    # Loop lag merges like any histogram; CPU does not add up: "is the replica's own
    # CPU saturated?" is asked of each process, so the aggregate keeps the busiest.
    cpu = [_cpu(before, now, max(1e-9, now.at - before.at)) for before, now in windows]
    known = [c for c in cpu if not math.isnan(c)]
    return replace(total, cpu_utilisation=max(known) if known else math.nan)
