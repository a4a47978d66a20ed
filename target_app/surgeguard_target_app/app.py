"""The demo service put together: a ``Service`` (protection, dependencies, cache,
job queues) with the demo's routes on its FastAPI app. The routes need the service;
the service does not need the routes, so this is the one place that joins them."""

from __future__ import annotations

import random

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from surgeguard_target_app.routes import add_routes
from surgeguard_target_app.service import Service
from surgeguard_target_app.settings import DemoSettings


def build_service(
    settings: DemoSettings,
    redis_client: aioredis.Redis,
    *,
    replica: str,
    registry: CollectorRegistry | None = None,
    rng: random.Random | None = None,
) -> Service:
    service = Service(settings, redis_client, replica=replica, registry=registry, rng=rng)
    add_routes(service.api, service)
    return service
