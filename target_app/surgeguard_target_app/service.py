"""The demo service assembled: the library's protection (door, limiter, bulkheads,
control-plane watcher, metrics) around the demo's FastAPI app, its simulated
dependencies, its cache and its job queues.

ASGI chain, outermost first: the door (``surgeguard.protect.Protection``, which also
answers /healthz and /metrics itself) -> body-size limit -> FastAPI. The routes are
added by ``surgeguard_target_app.app.build_service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping

import redis.asyncio as aioredis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from redis.exceptions import RedisError

from surgeguard import metric_names as names
from surgeguard.admission import Route, RouteTable
from surgeguard.aio import cancel_and_wait
from surgeguard.bulkhead import Bulkhead
from surgeguard.chaos import CALM
from surgeguard.client_keys import ClientKeys
from surgeguard.controlplane import ControlState
from surgeguard.health_listener import HealthListener
from surgeguard.knob_watcher import KnobWatcher
from surgeguard.knobs import Knobs
from surgeguard.limiter import Limiter
from surgeguard.priority import Priority
from surgeguard.protect import Protection, connect_redis
from surgeguard_target_app.cache import ReadThroughCache
from surgeguard_target_app.db import Database, SimulatedDb
from surgeguard_target_app.db.postgres import PostgresDb
from surgeguard_target_app.declaration import DEMO, DEPENDENCIES
from surgeguard_target_app.dependencies import SimulatedDependencies
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.jobs.streams import JOB_STREAMS
from surgeguard_target_app.remote.client import Callers
from surgeguard_target_app.settings import DemoSettings

__all__ = ["ROUTES", "Service", "connect_redis"]

log = logging.getLogger("surgeguard_target_app")

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
        settings: DemoSettings,
        redis_client: aioredis.Redis,
        *,
        replica: str,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis_client
        self.ready = False
        self.jobs_backlog = 0  # unfinished jobs in all streams, sampled every second
        self.api = FastAPI(
            title="surgeguard demo", lifespan=self._lifespan, docs_url=None, redoc_url=None
        )
        self.protection = Protection(
            self.api,
            routes=ROUTES,
            declaration=DEMO,
            settings=settings,
            replica=replica,
            registry=registry,
            redis_client=redis_client,
            on_control=self._on_control,
        )
        rng = rng or random.Random()
        # A dependency with a URL is a remote API (shared by every replica); the rest
        # are simulated in this process.
        remote = {d: url for d in DEPENDENCIES if (url := settings.remote_url(d))}
        local = [d for d in DEPENDENCIES if d not in remote]
        self.dependencies = SimulatedDependencies.build(
            {d: settings.dependency(d)[0] for d in local},
            {d: settings.dependency(d)[1] * 1000.0 for d in local},
            rng=rng,
        )
        self.callers = Callers.build(
            remote,
            self.dependencies,
            max_connections=settings.remote_max_connections,
            timeout_s=settings.dependency_timeout_ms / 1000.0,
        )
        # The db: a real Postgres shared by every replica when a URL is given.
        self.db: Database = (
            PostgresDb(
                settings.database_url,
                self.bulkheads["db"],
                capacity=settings.db_capacity,
                base_latency_s=settings.db_latency_ms / 1000.0,
                application_name=f"surgeguard {self.replica}"[:63],
                rng=random.Random(rng.getrandbits(64)),
            )
            if settings.database_url
            else SimulatedDb(self.dependencies["db"], self.bulkheads["db"])
        )
        self.cache = ReadThroughCache(
            redis_client,
            self.bulkheads["cache"],
            remote_latency=self.dependencies["cache"].call,
            rng=rng,
        )
        self._job_store = JobStore(redis_client)
        self._jobs_metrics()
        self.asgi = self.protection

    # -- what the protection holds, as the routes and the tests read it ----------------

    @property
    def replica(self) -> str:
        return self.protection.replica

    @property
    def registry(self) -> CollectorRegistry:
        return self.protection.registry

    @property
    def limiter(self) -> Limiter:
        return self.protection.limiter

    @property
    def bulkheads(self) -> Mapping[str, Bulkhead]:
        return self.protection.bulkheads

    @property
    def knobs(self) -> Knobs:
        return self.protection.knobs

    @property
    def modes(self) -> frozenset[str]:
        return self.protection.modes

    @property
    def watcher(self) -> KnobWatcher:
        assert self.protection.watcher is not None  # the demo always has Redis
        return self.protection.watcher

    @property
    def health(self) -> HealthListener | None:
        return self.protection.health

    @property
    def client_keys(self) -> ClientKeys | None:
        return self.protection.client_keys

    # -- the control plane --------------------------------------------------------------

    def _on_control(self, state: ControlState) -> None:
        """Chaos for the simulated dependencies (drills); others' names are left out, and
        so is a remote API's: it applies its own, once for every replica."""
        local = self.dependencies
        self.dependencies.apply_chaos({d: c for d, c in state.chaos.items() if d in local})
        db: Database | None = getattr(self, "db", None)  # None while being built
        if db is not None:
            db.set_chaos(state.chaos.get("db", CALM))
            db.limit_changed()  # bulkhead.db may have moved: the pool follows it

    def _jobs_metrics(self) -> None:
        registry = self.registry
        self._jobs_pending = Gauge(
            names.JOBS_PENDING,
            "Jobs not yet acknowledged by a worker, per stream.",
            ["stream"],
            registry=registry,
        )
        self._jobs_lag = Gauge(
            names.JOBS_OLDEST_PENDING_AGE_SECONDS,
            "Age of each stream's oldest unfinished job, seconds (0 when empty).",
            ["stream"],
            registry=registry,
        )
        for stream in JOB_STREAMS:
            self._jobs_pending.labels(stream).set(0)
            self._jobs_lag.labels(stream).set(0)
        self._jobs_dead = Gauge(
            names.JOBS_DEAD_LETTERS,
            "Jobs in the dead-letter stream.",
            registry=registry,
        )
        Gauge(
            names.JOBS_BACKLOG_LIMIT,
            "Backlog (jobs) past which signups are answered with X-Degraded: jobs_backlog.",
            registry=registry,
        ).set(self.settings.job_backlog_limit)

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
        # The protection has started (control plane read, watcher, loop lag, health).
        await self.db.start()  # schema and seed; a db not up yet is retried on first use
        sampler = asyncio.create_task(self._sample_jobs(), name="jobs-sampler")
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            await cancel_and_wait(sampler)
            await self.protection.stop()  # before Redis goes: its watcher uses it
            await self.redis.aclose()
            await self.callers.aclose()
            await self.db.close()
