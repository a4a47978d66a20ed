"""The controller's own Prometheus metrics: what it saw, decided and failed at."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from surgeguard import metric_names as names


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.knob = Gauge(
            "surgeguard_controller_knob",
            "Knob value the controller last saw.",
            ["replica", "knob"],
            registry=registry,
        )
        self.decisions = Counter(
            "surgeguard_controller_decisions",
            "Knob moves decided, by knob and action (cut, grow).",
            ["knob", "action", "applied"],
            registry=registry,
        )
        self.mode_switches = Counter(
            "surgeguard_controller_mode_switches",
            "Automatic degradation-mode switches.",
            ["mode", "active"],
            registry=registry,
        )
        self.scrape_errors = Counter(
            "surgeguard_controller_scrape_errors",
            "Failed reads of a replica's signals.",
            ["target"],
            registry=registry,
        )
        self.tick = Histogram(
            "surgeguard_controller_tick_seconds",
            "Duration of one control tick, seconds.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.stale = Gauge(
            "surgeguard_controller_replica_stale",
            "1 while a replica could not be read.",
            ["replica"],
            registry=registry,
        )
        self.p99 = Gauge(
            "surgeguard_controller_p99_seconds",
            "Admitted p99 of the last window, seconds.",
            ["replica"],
            registry=registry,
        )
        self.tick_failures = Counter(
            "surgeguard_controller_tick_failures",
            "Control ticks that failed (an exception, or the control plane unreachable).",
            registry=registry,
        )
        self.obeying = Gauge(
            "surgeguard_controller_replica_obeying",
            "1 while a replica applies the published control document, 0 while it does not.",
            ["replica"],
            registry=registry,
        )
        self.budget_total = Gauge(
            names.CONTROLLER_BUDGET_TOTAL,
            "Calls in flight a shared dependency honours across all replicas (its budget).",
            ["dependency"],
            registry=registry,
        )
        self.budget_share = Gauge(
            names.CONTROLLER_BUDGET_SHARE,
            "A replica's share of a dependency's budget as published, calls.",
            ["dependency", "replica"],
            registry=registry,
        )
        self.replicas = Gauge(
            names.CONTROLLER_REPLICAS,
            "Replicas the controller tunes (read at least once; an announced one until it leaves).",
            registry=registry,
        )

    def forget(self, replica: str, target: str, knobs: Iterable[str]) -> None:
        """A replica that left: its series go (a fleet that churns must not grow them)."""
        for gauge in (self.stale, self.p99, self.obeying):
            gauge.remove(replica)
        for knob in knobs:
            self.knob.remove(replica, knob)
        self.scrape_errors.remove(target)
