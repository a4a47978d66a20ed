"""A real controller (real uvicorn, real Redis) over real target replicas."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from surgeguard.cli.wiring import drill_scenarios
from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_controller.app import build_app, connect
from surgeguard_controller.decide import ControllerConfig, Decider
from surgeguard_controller.drills.drill import Scenarios
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller
from surgeguard_controller.operators import Operators
from surgeguard_controller.sensing.sources import DirectSource
from tests.support.servers import ServerThread
from tests.target_app.conftest import start_target  # noqa: F401 - a fixture, re-exported

TOKEN = "test-admin-token-of-24-chars"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class RunningController:
    def __init__(self, server: ServerThread, controller: Controller) -> None:
        self.server = server
        self.controller = controller
        self.url = server.url

    def tick(self) -> Any:
        """One control tick, run on the controller's own loop."""
        return self.server.call(self.controller.tick())


StartController = Callable[..., RunningController]


@pytest.fixture
def start_controller(redis_server: EmbeddedRedis) -> Iterator[StartController]:
    """``start_controller(targets, run_loop=False, **config)``; stopped after the test.
    ``drills``: builds the controller's drill runner (default: the app's own);
    ``scenarios``: what drills may run (default: the load tests' catalogue, as the CLI
    hands it in);
    ``decider``: builds its decider from the config (default: a ``Decider``);
    ``operators``: who may write (default: ``admin_token`` as the operator admin)."""
    running: list[ServerThread] = []

    def start(
        targets: list[str],
        *,
        run_loop: bool = False,
        tick_s: float = 1.0,
        redis_url: str | None = None,
        admin_token: str | None = TOKEN,
        operators: Operators | None = None,
        scope: str = "replica",
        drills: Callable[[Controller], DrillRunner] | None = None,
        scenarios: Scenarios | None = None,
        decider: Callable[[ControllerConfig], Decider] | None = None,
        ready_grace_s: float | None = None,
        **config: Any,
    ) -> RunningController:
        http = httpx.AsyncClient()
        client = connect(redis_url or redis_server.url)  # the client the CLI builds
        settings = ControllerConfig(**config)
        controller = Controller(
            client,
            DirectSource(http, targets),
            settings,
            scope=scope,
            tick_s=tick_s,
            decider=decider(settings) if decider is not None else None,
            ready_grace_s=ready_grace_s,
        )
        server = ServerThread(
            build_app(
                controller,
                admin_token=admin_token,
                operators=operators,
                scenarios=drill_scenarios() if scenarios is None else scenarios,
                http=http,
                run_loop=run_loop,
                drills=drills(controller) if drills is not None else None,
            )
        )
        running.append(server)
        server.start()
        return RunningController(server, controller)

    try:
        yield start
    finally:
        for server in running:
            server.stop()
