"""The controller process: the control loop plus its API, metrics and health routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from surgeguard.aio import cancel_and_wait
from surgeguard.body_limit import BodySizeLimitMiddleware
from surgeguard.runtime import redis_client
from surgeguard_controller.api import build_api, desk_of, install_error_handlers
from surgeguard_controller.drills.api import build_drills_api
from surgeguard_controller.drills.drill import Scenarios
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller
from surgeguard_controller.operators import Operators, WriteDoor

log = logging.getLogger("controller")
DEFAULT_DRILLS_DIR = Path(".surgeguard") / "drills"
BODY_LIMIT = 64 * 1024  # bytes: the largest write body is a few hundred


def build_app(
    controller: Controller,
    *,
    admin_token: str | None,
    scenarios: Scenarios,
    operators: Operators | None = None,
    body_limit: int = BODY_LIMIT,
    http: httpx.AsyncClient | None = None,
    run_loop: bool = True,
    drills: DrillRunner | None = None,
) -> FastAPI:
    """The ASGI app. With ``run_loop`` the control loop runs for the app's lifetime.
    ``scenarios``: the load-test scenarios a drill may run (the composition root hands
    in the load tests' catalogue; the controller does not import the load tests).
    ``drills`` runs load-test drills (default: against the first target then, reports under
    ``.surgeguard/drills``); a running drill is stopped when the app shuts down.
    ``operators``: who may write (default: ``admin_token`` as the operator "admin");
    ``body_limit``: the largest request body, bytes (413 past it)."""
    if operators is None:
        operators = Operators({"admin": admin_token} if admin_token else {})
    runner = drills or DrillRunner(
        controller.redis,
        target=lambda: next(iter(controller.source.targets), ""),
        out_root=DEFAULT_DRILLS_DIR,
        admin_token=admin_token,
    )
    runner.bind(desk_of(controller))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # before the loop and the API: chaos a vanished drill left goes first
            await runner.recover()
        except RedisError as exc:  # the controller still starts; drills will say why
            log.warning("could not check for drills left running: %s", exc)
        # Again until done (the lease of a controller just killed may still be held).
        cleanup = asyncio.create_task(runner.recover_until_clean(), name="drill-cleanup")
        task = asyncio.create_task(controller.run(), name="control-loop") if run_loop else None
        try:
            yield
        finally:
            await cancel_and_wait(cleanup)
            # uvicorn has closed its socket by now: a drill's own undo cannot reach this
            # API any more, so the runner puts its chaos back in Redis itself, before the
            # Redis client closes.
            await runner.shutdown()
            if task is not None:
                await cancel_and_wait(task)
            # A standby takes over at its next tick, not after the lease's TTL.
            with contextlib.suppress(RedisError, OSError):
                await controller.lease.release()
            if http is not None:
                await http.aclose()
            await controller.redis.aclose()

    app = FastAPI(title="surgeguard controller", lifespan=lifespan)
    install_error_handlers(app)
    # Outermost first: the operator's token, then the body's size, then the routes.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=body_limit)
    app.add_middleware(WriteDoor, operators=operators, registry=controller.registry)
    app.state.drills = runner
    app.include_router(build_api(controller))
    app.include_router(build_drills_api(controller, runner, scenarios))

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "ticks": controller.ticks}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """503 while control ticks fail (3 in a row) or none has succeeded after the
        start-up grace; the body carries the state's ``tick`` object either way."""
        why = controller.ready()
        body = {"status": "ready" if why is None else "not ready", "tick": controller.health.json()}
        if why is not None:
            body["reason"] = why
        return JSONResponse(body, status_code=200 if why is None else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(controller.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def connect(redis_url: str) -> aioredis.Redis:
    return redis_client.connect(redis_url, timeout_s=1.0, connect_timeout_s=1.0)
