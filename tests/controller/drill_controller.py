"""A controller in a process of its own whose drills run ``fake_load.py``, for tests that
must kill the controller itself (SIGKILL: no shutdown path runs).

    python drill_controller.py REDIS_URL TARGET_URL PORT OUT_DIR

Its admin token is ``SURGEGUARD_ADMIN_TOKEN`` from the environment; the fake load
generator's environment is this process's (``FAKE_LOAD_*`` steer it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import redis.asyncio as aioredis
import uvicorn

from surgeguard.cli.wiring import drill_scenarios
from surgeguard_controller.app import build_app
from surgeguard_controller.decide import ControllerConfig
from surgeguard_controller.drills.runner import DrillRunner
from surgeguard_controller.loop import Controller
from surgeguard_controller.sensing.sources import DirectSource

FAKE_LOAD = Path(__file__).with_name("fake_load.py")


def main() -> int:
    redis_url, target, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    token = os.environ["SURGEGUARD_ADMIN_TOKEN"]
    http = httpx.AsyncClient()
    controller = Controller(
        aioredis.Redis.from_url(redis_url),
        DirectSource(http, [target]),
        ControllerConfig(),
        tick_s=1.0,  # its lease (3 ticks) outlives it: a restart must wait for the lease
    )
    runner = DrillRunner(
        controller.redis,
        target=target,
        out_root=out,
        controller_url=f"http://127.0.0.1:{port}",
        admin_token=token,
        command=(sys.executable, str(FAKE_LOAD)),
        env=dict(os.environ),
        poll_s=0.05,
    )
    app = build_app(
        controller,
        admin_token=token,
        scenarios=drill_scenarios(),
        http=http,
        run_loop=False,
        drills=runner,
    )
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
