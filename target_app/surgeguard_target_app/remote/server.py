"""Run one remote API on uvicorn (``surgeguard remote NAME --port P``)."""

from __future__ import annotations

import uvicorn

from surgeguard.protect import connect_redis
from surgeguard_target_app.remote.api import RemoteName
from surgeguard_target_app.remote.app import RemoteService
from surgeguard_target_app.remote.settings import RemoteSettings

# Where ``surgeguard remote NAME`` listens unless told (the demo's other ports: 8000
# target, 8001 controller, 8002 worker metrics).
DEFAULT_PORTS: dict[RemoteName, int] = {"recommendations": 8003, "payments": 8004}


def serve_remote(name: RemoteName, settings: RemoteSettings, port: int) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    redis_client = connect_redis(settings.redis_url) if settings.redis_url else None
    service = RemoteService(name, settings, redis_client)
    config = uvicorn.Config(
        service.asgi,
        host=settings.host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        log_config=None,  # its lines go through surgeguard.logs like ours
        access_log=False,
        # Calls still inside when asked to stop are cut after this: a stopped remote
        # must look stopped to its callers soon, not after its slowest call.
        timeout_graceful_shutdown=1,
        backlog=4096,
    )
    capacity, latency_s = settings.dependency(name)
    chaos = "follows the control plane's chaos" if redis_client else "no Redis: no chaos"
    print(
        f"remote {name} listening on http://{settings.host}:{port} "
        f"({capacity} slots, {latency_s * 1000:g} ms a call; {chaos})",
        flush=True,
    )
    uvicorn.Server(config).run()
    return 0
