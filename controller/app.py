"""The controller process: the control loop plus its API, metrics and health routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.api import build_api, install_validation_handler
from controller.loop import Controller
from surgeguard.aio import cancel_and_wait


def build_app(
    controller: Controller,
    *,
    admin_token: str | None,
    http: httpx.AsyncClient | None = None,
    run_loop: bool = True,
) -> FastAPI:
    """The ASGI app. With ``run_loop`` the control loop runs for the app's lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(controller.run(), name="control-loop") if run_loop else None
        try:
            yield
        finally:
            if task is not None:
                await cancel_and_wait(task)
            if http is not None:
                await http.aclose()
            await controller.redis.aclose()

    app = FastAPI(title="surgeguard controller", lifespan=lifespan)
    install_validation_handler(app)
    app.state.admin_token = admin_token
    app.include_router(build_api(controller))

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "ticks": controller.ticks}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(controller.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def connect(redis_url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
