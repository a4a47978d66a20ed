"""The demo service assembled: limiter, bulkheads, simulated dependencies, cache,
the control-plane watcher, metrics, and the ASGI chain in front of the routes.

ASGI chain, outermost first: AdmissionMiddleware (which also answers /healthz and
/metrics itself) -> BodySizeLimitMiddleware -> FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping

import redis.asyncio as aioredis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.aio import cancel_and_wait
from surgeguard.body_limit import BodySizeLimitMiddleware
from surgeguard.bulkhead import Bulkhead, DependencyMetrics
from surgeguard.controlplane import ControlState
from surgeguard.health_listener import HealthListener
from surgeguard.knob_watcher import KnobWatcher
from surgeguard.knobs import DEPENDENCIES, Knobs
from surgeguard.limiter import Limiter
from surgeguard.loop_lag import LoopLagMonitor
from surgeguard.metrics import AdmissionMetrics
from surgeguard.modes import Mode
from surgeguard.penalty_box import PenaltyBox
from surgeguard.priority import Priority
from surgeguard.settings import Settings
from surgeguard_target_app.cache import ReadThroughCache
from surgeguard_target_app.dependencies import SimulatedDependencies
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.jobs.streams import JOB_STREAMS

log = logging.getLogger("target_app")

ROUTES = RouteTable(
    exact={
        "/ping": Route("ping", Priority.NORMAL, needs_key=False),
        "/feed": Route("feed", Priority.NORMAL),
        "/orders": Route("orders", Priority.CRITICAL),
        "/signup": Route("signup", Priority.CRITICAL),
        "/recommendations": Route("recommendations", Priority.SHEDDABLE),
        "/analytics": Route("analytics", Priority.SHEDDABLE),
    },
    prefixes=[
        ("/items/", Route("items", Priority.NORMAL)),
        ("/signups/", Route("signup_status", Priority.NORMAL)),
    ],
)

JOBS_SAMPLE_PERIOD_S = 1.0


class Service:
    """Everything one replica owns. Built once per process (or per test)."""

    def __init__(
        self,
        settings: Settings,
        redis_client: aioredis.Redis,
        *,
        replica: str,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis_client
        self.replica = replica
        if registry is None:
            registry = CollectorRegistry()
            # The process's memory, CPU and file descriptors: "memory stays bounded
            # under 10,000 users" is read from process_resident_memory_bytes.
            ProcessCollector(registry=registry)
        self.registry = registry
        self.initial_knobs = settings.initial_knobs()
        self.knobs: Knobs = self.initial_knobs
        self.modes: frozenset[Mode] = settings.mode_set
        self.ready = False
        self.jobs_backlog = 0  # unfinished jobs in all streams, sampled every second

        self.limiter = Limiter(
            self.knobs.concurrency_limit,
            self.knobs.queue_limit,
            self.knobs.queue_timeout_ms / 1000.0,
            client_share=settings.client_share,
        )
        self.admission_metrics = AdmissionMetrics(
            self.registry, slo_seconds=settings.slo_seconds, routes=ROUTES.names
        )
        self.admission_metrics.bind_limiter(self.limiter)
        self.client_keys = settings.client_key_ceilings
        # Clients that ignore Retry-After wait for it before they are answered again.
        self.penalty_box = (
            PenaltyBox(
                max_retry_after_s=settings.penalty_max_retry_after_s,
                max_held=settings.penalty_max_held,
            )
            if settings.penalty_box
            else None
        )
        if self.penalty_box is not None:
            self.admission_metrics.bind_penalty_box(self.penalty_box, self.registry)
        # Lag of this replica's event loop: the controller compares it with the
        # admitted p99 and process_cpu_seconds_total to tell "the CPU is taken by
        # another process" from "this replica's own work is too much".
        self.loop_lag = LoopLagMonitor(self.registry)
        # Probes and scrapes on a port of their own, when asked for (see its module).
        self.health: HealthListener | None = None
        if settings.health_port is not None:
            self.health = HealthListener(
                self.registry,
                lambda: self.loop_lag.last_wakeup,
                host=settings.host,
                port=settings.health_port,
            )

        rng = rng or random.Random()
        self.dependencies = SimulatedDependencies.build(
            {d: settings.dependency(d)[0] for d in DEPENDENCIES},
            {d: settings.dependency(d)[1] * 1000.0 for d in DEPENDENCIES},
            rng=rng,
        )
        dependency_metrics = DependencyMetrics(self.registry, slo_seconds=settings.slo_seconds)
        self.bulkheads: Mapping[str, Bulkhead] = {
            d: Bulkhead(
                d,
                self.knobs.bulkhead(d),
                max_wait_s=settings.bulkhead_max_wait_ms / 1000.0,
                timeout_s=settings.dependency_timeout_ms / 1000.0,
                metrics=dependency_metrics,
            )
            for d in DEPENDENCIES
        }
        self.cache = ReadThroughCache(
            redis_client,
            self.bulkheads["cache"],
            remote_latency=self.dependencies["cache"].call,
            rng=rng,
        )
        self._job_store = JobStore(redis_client)
        self.watcher = KnobWatcher(
            redis_client,
            self.apply_control,
            poll_interval_s=settings.control_poll_ms / 1000.0,
            replica=self.replica,
            initial=self.initial_knobs,
            initial_modes=self.modes,
        )
        self._control_metrics()

        from surgeguard_target_app.routes import build_api  # routes need the Service type

        self.api: FastAPI = build_api(self, lifespan=self._lifespan)
        self.admission = AdmissionMiddleware(
            BodySizeLimitMiddleware(self.api, settings.max_body_bytes),
            self.limiter,
            ROUTES,
            self.admission_metrics,
            client_keys=self.client_keys,
            penalty_box=self.penalty_box,
            address_header=settings.client_address_header.encode() or None,
            retry_after_s=(settings.retry_after_min_s, settings.retry_after_max_s),
            registry=self.registry,
            enabled=not settings.no_admission,
        )
        self.admission.set_modes(self.modes)
        self.asgi = self.admission

    # -- the control plane --------------------------------------------------------------

    def apply_control(self, state: ControlState) -> None:
        """Apply a control document: everything is computed (and validated) first,
        then set, so a bad value leaves every knob as it was."""
        knobs = state.knobs_for(self.replica, self.initial_knobs)
        modes = state.modes if state.version > 0 else self.settings.mode_set
        self.limiter.set_limits(
            limit=knobs.concurrency_limit,
            queue_limit=knobs.queue_limit,
            queue_timeout_s=knobs.queue_timeout_ms / 1000.0,
        )
        for name, bulkhead in self.bulkheads.items():
            bulkhead.set_limit(knobs.bulkhead(name))
        self.dependencies.apply_chaos(state.chaos)
        self.admission.set_modes(modes)
        self.knobs, self.modes = knobs, modes

    def _control_metrics(self) -> None:
        registry = self.registry
        Gauge(
            "surgeguard_control_plane_staleness_seconds",
            "Seconds since this replica last read the control plane (fail static meanwhile).",
            registry=registry,
        ).set_function(lambda: self.watcher.staleness_s)
        Gauge(
            "surgeguard_control_plane_version",
            "Version of the control document applied (-1: none yet).",
            registry=registry,
        ).set_function(lambda: self.watcher.applied_version)
        Gauge(
            "surgeguard_replica_info",
            "Always 1; names this replica (the control plane's per-replica key).",
            ["replica"],
            registry=registry,
        ).labels(self.replica).set(1)
        mode_active = Gauge(
            "surgeguard_mode_active",
            "1 while a degradation mode is on.",
            ["mode"],
            registry=registry,
        )
        for mode in Mode:
            mode_active.labels(mode.value).set_function(self._mode_reader(mode))
        self._jobs_pending = Gauge(
            "surgeguard_jobs_pending",
            "Jobs not yet acknowledged by a worker, per stream.",
            ["stream"],
            registry=registry,
        )
        self._jobs_lag = Gauge(
            "surgeguard_jobs_oldest_pending_age_seconds",
            "Age of each stream's oldest unfinished job, seconds (0 when empty).",
            ["stream"],
            registry=registry,
        )
        for stream in JOB_STREAMS:
            self._jobs_pending.labels(stream).set(0)
            self._jobs_lag.labels(stream).set(0)
        self._jobs_dead = Gauge(
            "surgeguard_jobs_dead_letters",
            "Jobs in the dead-letter stream.",
            registry=registry,
        )
        Gauge(
            "surgeguard_jobs_backlog_limit",
            "Backlog (jobs) past which signups are answered with X-Degraded: jobs_backlog.",
            registry=registry,
        ).set(self.settings.job_backlog_limit)

    def _mode_reader(self, mode: Mode) -> Callable[[], float]:
        return lambda: float(mode in self.modes)

    async def _sample_jobs(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                # The same look at the queues the worker takes, so the controller
                # (which reads replicas, not workers) sees backlog, lag and dead letters.
                sample = await self._job_store.sample()
                for stream, count in sample.pending.items():
                    self._jobs_pending.labels(stream).set(count)
                for stream, age in sample.oldest_age_s.items():
                    self._jobs_lag.labels(stream).set(age)
                self._jobs_dead.set(sample.dead_letters)
                self.jobs_backlog = sum(sample.pending.values())
            await asyncio.sleep(JOBS_SAMPLE_PERIOD_S)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.watcher.refresh()  # start on the plane's knobs when it is there
        self.watcher.start()
        sampler = asyncio.create_task(self._sample_jobs(), name="jobs-sampler")
        self.loop_lag.start()
        if self.health is not None:
            self.health.start()
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            if self.health is not None:
                self.health.stop()
            await self.loop_lag.stop()
            await cancel_and_wait(sampler)
            await self.watcher.stop()
            await self.redis.aclose()


def connect_redis(url: str) -> aioredis.Redis:
    """A client that fails fast: a request must get its 503 quickly when Redis is gone."""
    # One immediate retry covers a pooled connection broken by a Redis restart; more
    # (with redis-py's default backoff) would hold a request for seconds.
    return aioredis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=5,
    )
