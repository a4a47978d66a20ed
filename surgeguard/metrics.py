"""Prometheus metrics of a guarded service (names are a contract: ``surgeguard.metric_names``).

Label children are bound once here, at start-up, so the request path does a dict
lookup and an ``inc``/``observe`` on a plain object (``surgeguard.fastmetrics``) and
never formats a label or takes a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from surgeguard import metric_names as names
from surgeguard.fastmetrics import LocalCounter, LocalFamilies, LocalHistogram
from surgeguard.limiter import Limiter
from surgeguard.penalty_box import PenaltyBox
from surgeguard.priority import Priority
from surgeguard.reasons import REJECTION_REASONS

# Admitted outcomes (label ``outcome``), from the response status.
OUTCOMES: tuple[str, ...] = ("ok", "client_error", "unavailable", "error")
REJECTED = "rejected"

_LATENCY_EDGES_S = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)


# Extra edges around the SLO (as shares of it): the controller steers p99 in this
# range, and a quantile interpolated inside one wide bucket would hide where it is.
_SLO_SHARES = (0.6, 0.8, 0.9, 1.0, 1.1, 1.25)


def latency_buckets(slo_seconds: float) -> tuple[float, ...]:
    """Histogram edges in seconds, always with one exactly at the SLO and a few
    close around it."""
    near = {round(slo_seconds * share, 6) for share in _SLO_SHARES}
    return tuple(sorted(set(_LATENCY_EDGES_S) | near))


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status < 500:
        return "client_error"
    return "unavailable" if status == 503 else "error"


class AdmissionMetrics:
    """Request, rejection and limiter metrics with every label child bound up front."""

    def __init__(
        self, registry: CollectorRegistry, *, slo_seconds: float, routes: Iterable[str]
    ) -> None:
        routes = tuple(routes)
        buckets = latency_buckets(slo_seconds)
        families = LocalFamilies()
        self.duration = {(r, o): LocalHistogram(buckets) for r in routes for o in OUTCOMES}
        families.histogram(
            names.REQUEST_DURATION_SECONDS,
            "Time from admission to the end of the response, seconds (admitted requests).",
            ["route", "outcome"],
            {key: h for key, h in self.duration.items()},
        )
        # Most admissions never wait: they are counted (cheaply) as waits of 0.
        self.queue_wait = LocalHistogram((0.0, *buckets))
        families.histogram(
            names.QUEUE_WAIT_SECONDS,
            "Time an admitted request waited for a slot, seconds (0 when none was needed).",
            [],
            {(): self.queue_wait},
        )
        self.requests = {
            (r, p, o): LocalCounter()
            for r in routes
            for p in Priority
            for o in (*OUTCOMES, REJECTED)
        }
        families.counter(
            names.REQUESTS_TOTAL,
            "Requests by route, priority and outcome.",
            ["route", "priority", "outcome"],
            {(r, p.label, o): c for (r, p, o), c in self.requests.items()},
        )
        self.rejections = {
            (reason, p): LocalCounter() for reason in REJECTION_REASONS for p in Priority
        }
        families.counter(
            names.REJECTIONS_TOTAL,
            "Requests turned away before any work, by reason.",
            ["reason", "priority"],
            {(reason, p.label): c for (reason, p), c in self.rejections.items()},
        )
        registry.register(families)
        self._gauges = {
            name: Gauge(name, doc, registry=registry)
            for name, doc in (
                (names.INFLIGHT, "Admitted requests in flight now."),
                (names.QUEUE_DEPTH, "Requests waiting for a slot now."),
                (
                    names.CONCURRENCY_LIMIT,
                    "In-flight limit now: the concurrency_limit knob (requests).",
                ),
                (names.QUEUE_LIMIT, "How many may wait now: the shed threshold (requests)."),
                (
                    names.QUEUE_TIMEOUT_SECONDS,
                    "Longest allowed wait for a slot now, seconds.",
                ),
                (
                    names.INFLIGHT_PEAK,
                    "Highest in-flight count over the last 1-2 s (requests).",
                ),
            )
        }

    def bind_penalty_box(self, box: PenaltyBox, registry: CollectorRegistry) -> None:
        """The penalty box's gauges and its counter, read at scrape time."""
        for name, doc, read in (
            (
                names.PENALTY_BOX_HELD,
                "Requests held now because their client came back before its Retry-After.",
                lambda: box.held,
            ),
            (
                names.PENALTY_BOX_CLIENTS,
                "Clients remembered with a Retry-After deadline (connections or addresses).",
                lambda: box.clients,
            ),
            (
                names.PENALTY_BOX_MAX_HELD,
                "Most requests the penalty box holds at once; past it: 429 + Connection: close.",
                lambda: box.max_held,
            ),
        ):
            Gauge(name, doc, registry=registry).set_function(read)
        registry.register(_BoxHolds(box))

    def bind_limiter(self, limiter: Limiter, knob: Callable[[], float] | None = None) -> None:
        """Gauges read the limiter at scrape time: zero cost on the request path.
        ``knob``: reads the ``concurrency_limit`` knob when the limiter enforces another
        limit under it (the inner loop's); None: the limiter's limit is the knob."""
        readers: dict[str, Callable[[], float]] = {
            names.INFLIGHT: lambda: limiter.in_flight,
            names.QUEUE_DEPTH: lambda: limiter.waiting,
            names.CONCURRENCY_LIMIT: knob or (lambda: limiter.limit),
            names.QUEUE_LIMIT: lambda: limiter.queue_limit,
            names.QUEUE_TIMEOUT_SECONDS: lambda: limiter.queue_timeout_s,
            names.INFLIGHT_PEAK: limiter.recent_peak,
        }
        for name, read in readers.items():
            self._gauges[name].set_function(read)


class _BoxHolds(Collector):
    """``surgeguard_penalty_box_holds_total``, read from the box's own count at scrape
    time (the request path only increments an int)."""

    def __init__(self, box: PenaltyBox) -> None:
        self._box = box

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        family.add_metric([], self._box.holds)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            names.PENALTY_BOX_HOLDS_TOTAL,
            "Requests held because their client came back before its Retry-After.",
        )
