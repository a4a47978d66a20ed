"""One call to protect an ASGI app: ``protect(app, routes=..., dependencies=...)``.

The returned ``Protection`` is itself the ASGI app to serve. Outermost first, a
request meets the door (``AdmissionMiddleware``: penalty box, client key, priority,
modes, limiter; it also answers ``/healthz`` and ``/metrics``), then the body-size
limit, then the app. The app's lifespan is wrapped: at start-up the protection reads
the control plane once and starts its watcher and the event-loop-lag monitor before
the app's own start-up runs; at shutdown it stops them after the app's.

Without Redis (no ``redis_url``) the knobs stay what the settings say and everything
else works. Run one worker per process: every process has its own limiter and
bulkheads, and the controller tunes each replica it scrapes (a second uvicorn worker
behind one port would be scraped as whichever answered).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector

from surgeguard.admission import AdmissionMiddleware, Route, RouteTable
from surgeguard.asgi import ASGIApp, Message, Receive, Scope, Send
from surgeguard.body_limit import BodySizeLimitMiddleware
from surgeguard.bulkhead import Bulkhead, BulkheadRejected, DependencyMetrics
from surgeguard.control_metrics import export_control
from surgeguard.controlplane import ControlState
from surgeguard.declaration import Declaration, Dependency
from surgeguard.fleet import Announcer
from surgeguard.health_listener import HealthListener
from surgeguard.inner.loop import InnerLoop, InnerMetrics
from surgeguard.knobs import Knobs
from surgeguard.limiter import Limiter
from surgeguard.loop_lag import LoopLagMonitor
from surgeguard.metrics import AdmissionMetrics
from surgeguard.modes import ModeSpec
from surgeguard.penalty_box import PenaltyBox
from surgeguard.runtime import redis_client
from surgeguard.settings import ENV_PREFIX, ReplicaSettings, SettingsError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from surgeguard.knob_watcher import KnobWatcher

log = logging.getLogger("surgeguard.protect")

OnControl = Callable[[ControlState], None]
# Seconds a client is told to wait when a bulkhead turns its call away (a 503).
BULKHEAD_RETRY_AFTER_S = 1


class Protection:
    """One protected app in one process. Serve this object; read ``modes`` and
    ``knobs`` from handlers; call dependencies inside ``bulkheads[name]``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: RouteTable,
        declaration: Declaration,
        settings: ReplicaSettings,
        replica: str,
        registry: CollectorRegistry | None = None,
        redis_client: aioredis.Redis | None = None,
        on_control: OnControl | None = None,
    ) -> None:
        """``redis_client``: the control plane's Redis when the app already has a
        client (the protection then leaves closing it to the app); otherwise one is
        made from ``settings.redis_url`` and closed at shutdown. ``on_control``: called
        with every control document applied, after the knobs and modes (the demo
        injects chaos from it)."""
        self.app = app
        self.settings = settings
        try:  # the deployment's budgets over the declared ones
            declaration = declaration.with_budgets(settings.budget_totals)
        except ValueError as exc:
            raise SettingsError(
                f"invalid setting {ENV_PREFIX}BUDGETS={settings.budgets!r}: {exc}"
            ) from None
        self.declaration = declaration
        self.replica = replica
        self._on_control = on_control
        self._running = False
        if registry is None:
            registry = CollectorRegistry()
            # Memory, CPU and file descriptors: the controller reads the CPU counter.
            ProcessCollector(registry=registry)
        self.registry = registry
        try:
            self.start_modes = declaration.parse_modes(settings.mode_names)
        except ValueError as exc:
            raise SettingsError(f"invalid setting {ENV_PREFIX}MODES: {exc}") from None
        self.initial_knobs = Knobs.build(settings.initial_door_knobs(), declaration.knob_specs)
        self.knobs: Knobs = self.initial_knobs
        if redis_client is not None or settings.redis_url is not None:
            # A control plane divides the budgets: until its document is read (Redis may
            # be down at start), a budgeted bulkhead has no share and runs at 0 slots.
            self.knobs = ControlState().knobs_for(replica, self.initial_knobs)
        self.control = ControlState()  # the document applied (version 0: none yet)
        self.modes: frozenset[str] = self.start_modes

        self.limiter = Limiter(
            self.knobs.concurrency_limit,
            self.knobs.queue_limit,
            self.knobs.queue_timeout_ms / 1000.0,
            client_share=settings.client_share,
        )
        self.admission_metrics = AdmissionMetrics(
            registry, slo_seconds=settings.slo_seconds, routes=routes.names
        )
        # The inner loop (SURGEGUARD_INNER_LOOP): a fast limit under the knob, which stays
        # the ceiling (and what the concurrency_limit gauge says, for the controller).
        self.inner: InnerLoop | None = None
        algorithm = settings.inner_algorithm()
        if algorithm is not None:
            self.inner = InnerLoop(
                algorithm,
                self.limiter,
                floor=self.knobs.specs["concurrency_limit"].minimum,
                ceiling=self.knobs.concurrency_limit,
                window_s=settings.inner_window_ms / 1000.0,
                metrics=InnerMetrics(registry, lambda: self.limiter.limit),
            )
            self.admission_metrics.bind_limiter(
                self.limiter, knob=lambda: self.knobs.concurrency_limit
            )
        else:
            InnerMetrics(registry, lambda: self.limiter.limit)  # the knob's, never moved
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
            self.admission_metrics.bind_penalty_box(self.penalty_box, registry)
        # The controller compares this loop's lag with the admitted p99 and the CPU
        # counter to tell "the CPU is taken elsewhere" from "this replica's own work".
        self.loop_lag = LoopLagMonitor(registry)
        # Probes and scrapes on a port of their own, when asked for (see its module).
        self.health: HealthListener | None = None
        if settings.health_port is not None:
            self.health = HealthListener(
                registry,
                lambda: self.loop_lag.last_wakeup,
                host=settings.host,
                port=settings.health_port,
            )
        dependency_metrics = DependencyMetrics(registry, slo_seconds=settings.slo_seconds)
        self.bulkheads: Mapping[str, Bulkhead] = {
            d.name: Bulkhead(
                d.name,
                self.knobs.bulkhead(d.name),
                max_wait_s=settings.bulkhead_max_wait_ms / 1000.0,
                timeout_s=settings.dependency_timeout_ms / 1000.0,
                metrics=dependency_metrics,
            )
            for d in declaration.dependencies
        }

        self._owns_redis = redis_client is None and settings.redis_url is not None
        self.redis = redis_client
        if self.redis is None and settings.redis_url is not None:
            self.redis = connect_redis(settings.redis_url)
        self.watcher: KnobWatcher | None = None
        if self.redis is not None:
            from surgeguard.knob_watcher import KnobWatcher

            self.watcher = KnobWatcher(
                self.redis,
                self.apply_control,
                poll_interval_s=settings.control_poll_ms / 1000.0,
                replica=replica,
                initial=self.initial_knobs,
                initial_modes=self.start_modes,
                known_modes=declaration.all_modes,
            )
        # Announced in Redis so a controller finds it (and forgets it when it stops).
        self.announcer: Announcer | None = None
        if self.redis is not None and settings.advertise_url is not None:
            self.announcer = Announcer(
                self.redis,
                replica,
                settings.advertise_url,
                interval_s=settings.announce_interval_ms / 1000.0,
            )
        export_control(
            registry,
            replica=replica,
            staleness_s=lambda: self.watcher.staleness_s if self.watcher else 0.0,
            applied_version=lambda: self.watcher.applied_version if self.watcher else -1,
            modes_on=lambda: self.modes,
            knobs=lambda: self.knobs,
            declaration=declaration,
            control=lambda: self.control,
            slo_s=settings.slo_seconds,
        )
        self.door = AdmissionMiddleware(
            BodySizeLimitMiddleware(
                app, settings.max_body_bytes, timeout_s=settings.body_timeout_ms / 1000.0
            ),
            self.limiter,
            routes,
            self.admission_metrics,
            client_keys=self.client_keys,
            penalty_box=self.penalty_box,
            address_header=settings.client_address_header.encode() or None,
            retry_after_s=(settings.retry_after_min_s, settings.retry_after_max_s),
            registry=registry,
            enabled=not settings.no_admission,
            max_body_bytes=settings.max_body_bytes,
            samples=self.inner.samples if self.inner is not None else None,
        )
        self.door.set_modes(self.modes)
        _answer_bulkhead_rejections(app)

    # -- serving ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.door(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan with the protection's start before its start-up and
        its stop after its shutdown."""
        started = False

        async def receive_wrapped() -> Message:
            nonlocal started
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                started = True
            return message

        async def send_wrapped(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown") and started:
                await self.stop()
            await send(message)

        try:
            await self.app(scope, receive_wrapped, send_wrapped)
        finally:
            if started and self._running:
                await self.stop()

    async def start(self) -> None:
        """Read the control plane once (start on its knobs when it is there), then
        watch it; start the loop-lag monitor and the health port."""
        if self._running:
            return
        self._running = True
        if self.watcher is not None:
            await self.watcher.refresh()
            self.watcher.start()
        self.loop_lag.start()
        if self.inner is not None:
            self.inner.start()
        if self.health is not None:
            self.health.start()
        if self.announcer is not None:
            self.announcer.start()

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self.announcer is not None:  # first: the controller stops scraping it at once
            await self.announcer.stop()
        if self.health is not None:
            self.health.stop()
        await self.loop_lag.stop()
        if self.inner is not None:
            await self.inner.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self._owns_redis and self.redis is not None:
            await self.redis.aclose()

    # -- the control plane --------------------------------------------------------------

    def apply_control(self, state: ControlState) -> None:
        """Apply a control document: everything is computed (and validated) first,
        then set, so a bad value leaves every knob as it was."""
        knobs = state.knobs_for(self.replica, self.initial_knobs)
        known = self.declaration.all_modes
        modes = state.modes_known(known) if state.version > 0 else self.start_modes
        limit, pinned = knobs.concurrency_limit, "concurrency_limit" in state.pins
        if self.inner is not None:  # under the knob, re-clamped at once; a pin is exact
            limit = self.inner.bounded(knobs.concurrency_limit, pinned=pinned)
            self.inner.set_bounds(knobs.concurrency_limit, pinned=pinned)
        self.limiter.set_limits(
            limit=limit,
            queue_limit=knobs.queue_limit,
            queue_timeout_s=knobs.queue_timeout_ms / 1000.0,
        )
        for name, bulkhead in self.bulkheads.items():
            bulkhead.set_limit(knobs.bulkhead(name))
        self.door.set_modes(modes)
        self.knobs, self.modes, self.control = knobs, modes, state
        if self._on_control is not None:
            self._on_control(state)

    # -- for the app's handlers ---------------------------------------------------------

    def slot(self, dependency: str) -> Callable[[], AsyncIterator[None]]:
        """A FastAPI dependency holding one slot of ``dependency``'s bulkhead for the
        request: ``Depends(protection.slot("inventory_db"))``. A full bulkhead answers
        503 with Retry-After (``BulkheadRejected``)."""
        bulkhead = self.bulkhead(dependency)

        async def hold_slot() -> AsyncIterator[None]:
            async with bulkhead.slot():
                yield

        return hold_slot

    def bulkhead(self, dependency: str) -> Bulkhead:
        try:
            return self.bulkheads[dependency]
        except KeyError:
            declared = ", ".join(self.bulkheads) or "none"
            raise KeyError(
                f"dependency {dependency!r} is not declared (declared: {declared})"
            ) from None


def protect(
    app: ASGIApp,
    *,
    routes: RouteTable | Mapping[str, Route],
    dependencies: Iterable[Dependency | str] = (),
    modes: Iterable[ModeSpec] = (),
    clients: str | None = None,
    slo_ms: int | None = None,
    redis_url: str | None = None,
    replica: str | None = None,
    settings: ReplicaSettings | None = None,
    registry: CollectorRegistry | None = None,
    on_control: OnControl | None = None,
) -> Protection:
    """Protect ``app``; serve what this returns.

    ``routes``: the door's table, or ``{path: Route}`` where a path ending in ``*`` is
    a prefix; anything else is admitted as ``other`` at normal priority.
    ``dependencies``: what the app calls (``Dependency`` or a bare name, 16 slots).
    ``modes``: the app's own degradation modes. ``clients``: client keys,
    ``"key[:ceiling],..."`` (None: no key is asked for). ``slo_ms``: the admitted p99
    objective. ``redis_url``: the control plane (None: static knobs). ``settings``:
    everything else (default: read from ``SURGEGUARD_*`` variables); the explicit
    arguments win over it. ``replica``: this replica's name on the control plane
    (default: the settings' ``replica_id``, else ``host:pid``, which changes at every
    restart: set ``SURGEGUARD_REPLICA_ID`` where the controller tunes replicas one by
    one). ``on_control``: called with each control document applied (its ``chaos``
    is the app's to inject, for drills).
    """
    given: dict[str, Any] = {
        k: v
        for k, v in {"client_keys": clients, "slo_p99_ms": slo_ms, "redis_url": redis_url}.items()
        if v is not None
    }
    cls = type(settings) if settings is not None else ReplicaSettings
    base = settings.model_dump() if settings is not None else {}
    chosen = cls.load(**{**base, **given})
    table = routes if isinstance(routes, RouteTable) else route_table(routes)
    declaration = Declaration.of(dependencies, modes)
    name = replica or chosen.replica_id or f"{chosen.host}:{os.getpid()}"
    return Protection(
        app,
        routes=table,
        declaration=declaration,
        settings=chosen,
        replica=name,
        registry=registry,
        on_control=on_control,
    )


def route_table(routes: Mapping[str, Route]) -> RouteTable:
    """``{"/orders": Route(...), "/stock/*": Route(...)}`` as a ``RouteTable``."""
    exact = {p: r for p, r in routes.items() if not p.endswith("*")}
    prefixes = [(p.removesuffix("*"), r) for p, r in routes.items() if p.endswith("*")]
    # Longest prefix first, so /stock/special/ wins over /stock/.
    prefixes.sort(key=lambda pr: len(pr[0]), reverse=True)
    return RouteTable(exact, prefixes)


def connect_redis(url: str) -> aioredis.Redis:
    """A client that fails fast: a request must get its 503 quickly when Redis is gone."""
    try:
        return redis_client.connect(url, timeout_s=0.5, connect_timeout_s=0.5, health_check_s=5)
    except ImportError:
        raise SettingsError(
            "a Redis URL was given but redis-py is not installed: pip install 'surgeguard[redis]'"
        ) from None


def _answer_bulkhead_rejections(app: ASGIApp) -> None:
    """A Starlette or FastAPI app answers a full or timed-out bulkhead with 503 and
    Retry-After instead of a 500 (other ASGI apps handle ``BulkheadRejected`` themselves)."""
    add = getattr(app, "add_exception_handler", None)
    if add is None:
        return
    with contextlib.suppress(ImportError):
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        async def unavailable(_: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, BulkheadRejected)
            return JSONResponse(
                {
                    "error": "unavailable",
                    "dependency": exc.dependency,
                    "detail": f"{exc.dependency} is saturated ({exc.reason}): {exc}",
                },
                status_code=503,
                headers={"Retry-After": str(BULKHEAD_RETRY_AFTER_S)},
            )

        add(BulkheadRejected, unavailable)
