"""One remote API as an ASGI app: the processor-sharing simulation behind HTTP.

``RemoteService(name, ...).asgi`` is the app for ``name`` only (the other name's route
does not exist there): its own ``SimulatedDependency`` (capacity, base latency), its own
``/healthz`` and ``/metrics``, and the chaos of the control document for its name.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import redis.asyncio as aioredis
from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from surgeguard_target_app.dependencies import DependencyError, SimulatedDependency
from surgeguard_target_app.remote import api
from surgeguard_target_app.remote.api import RemoteName
from surgeguard_target_app.remote.chaos import ChaosFollower
from surgeguard_target_app.remote.settings import RemoteSettings

T = TypeVar("T")


class RemoteService:
    """Everything one remote API process owns. ``asgi`` is the app to serve."""

    def __init__(
        self,
        name: RemoteName,
        settings: RemoteSettings,
        redis_client: aioredis.Redis | None,
        *,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if name not in api.REMOTE_NAMES:
            raise ValueError(f"unknown remote API {name!r}, known: {', '.join(api.REMOTE_NAMES)}")
        self.name = name
        capacity, latency_s = settings.dependency(name)
        self.dependency = SimulatedDependency(name, capacity, latency_s, rng=rng)
        self.redis = redis_client
        self.follower = (
            None
            if redis_client is None
            else ChaosFollower(
                redis_client,
                name,
                self.dependency.set_chaos,
                poll_interval_s=settings.control_poll_ms / 1000.0,
            )
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics()
        self.asgi = FastAPI(
            title=f"surgeguard demo {name}", lifespan=self._lifespan, docs_url=None, redoc_url=None
        )
        self._routes()

    def _metrics(self) -> None:
        dep, registry = self.dependency, self.registry
        self._calls = Counter(
            api.CALLS_TOTAL, "Calls answered.", ["dependency", "outcome"], registry=registry
        )
        for outcome in ("ok", "error"):
            self._calls.labels(self.name, outcome)
        self._received = Counter(
            api.CALLS_RECEIVED_TOTAL, "Calls received.", ["dependency"], registry=registry
        ).labels(self.name)
        self._seconds = Histogram(
            api.CALL_SECONDS,
            "A call's time inside the service, seconds.",
            ["dependency"],
            buckets=api.CALL_SECONDS_BUCKETS,
            registry=registry,
        ).labels(self.name)
        gauges: list[tuple[str, str, Callable[[], float]]] = [
            (api.IN_SERVICE, "Calls inside the service now.", lambda: dep.in_service),
            (api.PEAK_IN_SERVICE, "Most calls inside at once.", lambda: dep.peak_in_service),
            (api.CAPACITY, "Parallel slots (calls at full speed).", lambda: dep.capacity),
            (
                api.CHAOS_LATENCY_MULTIPLIER,
                "Chaos latency multiplier applied now (1 = calm).",
                lambda: dep.chaos.latency_multiplier,
            ),
            (
                api.CHAOS_ERROR_RATE,
                "Chaos share of failing calls applied now, 0..1.",
                lambda: dep.chaos.error_rate,
            ),
        ]
        for metric, help_text, read in gauges:
            Gauge(metric, help_text, ["dependency"], registry=registry).labels(
                self.name
            ).set_function(read)

    async def serve_call(self, answer: Callable[[], T]) -> T | JSONResponse:
        """One call: the simulated work, then ``answer()``; a simulated failure is a 503."""
        started = time.monotonic()
        self._received.inc()
        try:
            await self.dependency.call()
        except DependencyError as exc:
            self._calls.labels(self.name, "error").inc()
            return JSONResponse(
                {"error": "unavailable", "dependency": self.name, "detail": str(exc)}, 503
            )
        finally:
            self._seconds.observe(time.monotonic() - started)
        self._calls.labels(self.name, "ok").inc()
        return answer()

    def _routes(self) -> None:
        app = self.asgi

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.name}

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        if self.name == "recommendations":

            @app.get(api.RECOMMENDATIONS_PATH, response_model=None)
            async def recommend(
                user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                limit: Annotated[int, Query(ge=1, le=api.MAX_LIMIT)] = 5,
            ) -> api.Recommendations | JSONResponse:
                return await self.serve_call(
                    lambda: api.Recommendations(
                        user_id=user_id, items=api.recommended_items(user_id, limit)
                    )
                )

        else:

            @app.post(api.CHARGES_PATH, status_code=201, response_model=None)
            async def charge(body: api.ChargeIn) -> api.Charge | JSONResponse:
                return await self.serve_call(
                    lambda: api.Charge(
                        charge_id=secrets.token_hex(16),
                        order_id=body.order_id,
                        amount_cents=body.amount_cents,
                    )
                )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if self.follower is not None:
            await self.follower.refresh()  # chaos already set applies from the first call
            self.follower.start()
        try:
            yield
        finally:
            if self.follower is not None:
                await self.follower.stop()
            if self.redis is not None:
                await self.redis.aclose()
