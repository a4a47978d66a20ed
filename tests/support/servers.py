"""Real uvicorn servers on ephemeral loopback ports, for tests.

``ServerThread`` runs a server in a background thread with its own event loop, so a
test can speak real HTTP to it and still reach the app's objects (through ``call``,
which runs a coroutine on the server's loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


class ServerThread:
    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 15.0,
    ) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=0,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(self.config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="uvicorn-test", daemon=True)
        self.startup_timeout_s = startup_timeout_s
        self.host = host
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run ``coro`` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
