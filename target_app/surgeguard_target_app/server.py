"""Run one replica of the demo service on uvicorn (one worker process)."""

from __future__ import annotations

import uvicorn

from surgeguard.gc_policy import quiet_full_collections
from surgeguard.protect import connect_redis
from surgeguard.runtime.embedded_redis import redis_url_for
from surgeguard_target_app.app import build_service
from surgeguard_target_app.settings import DemoSettings


def serve(settings: DemoSettings, port: int) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    with redis_url_for(settings.redis_url, settings.data_dir, settings.redis_fsync) as url:
        service = build_service(settings, connect_redis(url), replica=settings.replica_name(port))
        # Under a storm of held requests CPython's full collections stop the loop for
        # most of a second each and free nothing: make them rare (see gc_policy).
        quiet_full_collections()
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
            timeout_graceful_shutdown=5,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        print(f"target {service.replica} listening on http://{settings.host}:{port}", flush=True)
        if service.health is not None:
            print(
                f"target {service.replica} health and metrics also on "
                f"http://{settings.host}:{service.health.port}",
                flush=True,
            )
        server.run()
    return 0
