"""A real target service (real uvicorn, real Redis) per test, with settings per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from surgeguard.embedded_redis import EmbeddedRedis
from surgeguard.settings import load_settings
from target_app.server import build_service
from target_app.service import Service
from tests.support.servers import ServerThread

API_KEY = {"X-Api-Key": "demo-key"}


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
        settings = load_settings(**overrides)
        service = build_service(settings, settings.redis_url or "", port=len(running))
        server = ServerThread(service.asgi)
        running.append(server)
        server.start()
        return RunningTarget(server, service)

    try:
        yield start
    finally:
        for server in running:
            server.stop()
