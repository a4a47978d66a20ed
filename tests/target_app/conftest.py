"""A real target service (real uvicorn, real Redis) per test, with settings per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from surgeguard.controlplane import ControlPlaneWriter
from surgeguard.protect import connect_redis
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.app import build_service
from surgeguard_target_app.service import Service
from surgeguard_target_app.settings import DemoSettings
from tests.support.servers import ServerThread

API_KEY = {"X-Api-Key": "demo-key"}
SIGNUP = {"email": "ada@example.com", "name": "Ada"}


class RunningTarget:
    def __init__(self, server: ServerThread, service: Service) -> None:
        self.server = server
        self.service = service
        self.url = server.url


StartTarget = Callable[..., RunningTarget]


@pytest.fixture
def start_target(redis_server: EmbeddedRedis, redis_client: Any) -> Iterator[StartTarget]:
    """``start_target(**settings)`` -> a running replica; all are stopped after the test."""
    running: list[ServerThread] = []

    def start(**overrides: Any) -> RunningTarget:
        overrides.setdefault("redis_url", redis_server.url)
        overrides.setdefault("control_poll_ms", 200)
        settings = DemoSettings.load(**overrides)
        service = build_service(
            settings,
            connect_redis(settings.redis_url or ""),
            replica=settings.replica_name(len(running)),
        )
        server = ServerThread(service.asgi)
        running.append(server)
        server.start()
        return RunningTarget(server, service)

    try:
        yield start
    finally:
        for server in running:
            server.stop()


@pytest.fixture
async def writer(redis_server: EmbeddedRedis) -> AsyncIterator[ControlPlaneWriter]:
    """The control plane's writer, on the session Redis (flushed by start_target)."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield ControlPlaneWriter(client, writer="test")
    finally:
        await client.aclose()


async def applied(client: httpx.AsyncClient, version: int) -> bool:
    """Whether the replica behind ``client`` has applied control-plane ``version``."""
    ready = (await client.get("/readyz")).json()
    return bool(ready["control_plane"]["version"] == version)
