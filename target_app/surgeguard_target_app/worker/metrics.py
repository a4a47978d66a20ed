"""What a worker exports on its own ``/metrics``: backlog, lag, outcomes, concurrency.

Label children are bound once here, so counting an outcome is one ``inc()``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from surgeguard import metric_names as names
from surgeguard_target_app.jobs.store import Sample

MALFORMED = "malformed"  # the task label of entries that are no job
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    def __init__(
        self, registry: CollectorRegistry, *, tasks: Iterable[str], streams: Iterable[str]
    ) -> None:
        self.registry = registry
        tasks = (*tasks, MALFORMED)
        streams = tuple(streams)
        pending = Gauge(
            names.JOBS_PENDING,
            "Unfinished jobs per stream: waiting plus in progress.",
            ["stream"],
            registry=registry,
        )
        oldest = Gauge(
            names.JOBS_OLDEST_PENDING_AGE_SECONDS,
            "Age of the oldest unfinished job per stream (the lag), seconds.",
            ["stream"],
            registry=registry,
        )
        self.pending = {s: pending.labels(s) for s in streams}
        self.oldest_age = {s: oldest.labels(s) for s in streams}
        self.retry_scheduled = Gauge(
            names.JOBS_RETRY_SCHEDULED,
            "Failed jobs waiting out their backoff before the next attempt.",
            registry=registry,
        )
        self.dead_letters = Gauge(
            names.JOBS_DEAD_LETTERS,
            "Entries in the dead-letter stream.",
            registry=registry,
        )
        processed = Counter(
            names.JOBS_PROCESSED_TOTAL,
            "Jobs this worker finished with their effect, by task.",
            ["task"],
            registry=registry,
        )
        failed = Counter(
            names.JOBS_FAILED_TOTAL,
            "Failed attempts (each retried or given up), by task.",
            ["task"],
            registry=registry,
        )
        dead = Counter(
            names.JOBS_DEAD_TOTAL,
            "Jobs this worker moved to the dead letters, by task ('malformed': no job).",
            ["task"],
            registry=registry,
        )
        duplicate = Counter(
            names.JOBS_DUPLICATE_TOTAL,
            "Runs whose effect had already happened (skipped by the idempotency record).",
            ["task"],
            registry=registry,
        )
        duration = Histogram(
            names.JOB_DURATION_SECONDS,
            "Run time of one attempt (the handler), seconds.",
            ["task"],
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.processed = {t: processed.labels(t) for t in tasks}
        self.failed = {t: failed.labels(t) for t in tasks}
        self.dead = {t: dead.labels(t) for t in tasks}
        self.duplicate = {t: duplicate.labels(t) for t in tasks}
        self.duration = {t: duration.labels(t) for t in tasks}
        self.reclaimed = Counter(
            names.JOBS_RECLAIMED_TOTAL,
            "Entries taken over from a worker that held them too long (XAUTOCLAIM).",
            registry=registry,
        )
        self.concurrency_in_use = Gauge(
            names.WORKER_CONCURRENCY_IN_USE,
            "Jobs running right now in this worker.",
            registry=registry,
        )
        self.concurrency_limit = Gauge(
            names.WORKER_CONCURRENCY_LIMIT,
            "Jobs this worker may run at once.",
            registry=registry,
        )

    def observe(self, sample: Sample) -> None:
        for stream, count in sample.pending.items():
            if stream in self.pending:
                self.pending[stream].set(count)
                self.oldest_age[stream].set(sample.oldest_age_s[stream])
        self.retry_scheduled.set(sample.retry_scheduled)
        self.dead_letters.set(sample.dead_letters)
