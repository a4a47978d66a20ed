"""What a benchmark run changes on a schedule while the load runs: the sweep's limits,
the drift's db latency. Written to the control plane directly, so it works with and
without a controller (the controller's writer builds on the stored document, so a
change written here stays until written again).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from surgeguard.chaos import Chaos
from surgeguard.controlplane import ControlPlaneWriter

WRITER = "bench"  # the control document's updated_by for the benchmark's own writes


class Plane:
    """Blocking writes to the control plane in Redis at ``redis_url``."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def _write(self, act: Callable[[ControlPlaneWriter], Any]) -> None:
        async def run() -> None:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                await act(ControlPlaneWriter(client, writer=WRITER))
            finally:
                await client.aclose()

        asyncio.run(run())

    def set_knobs(self, values: Mapping[str, int]) -> None:
        self._write(lambda w: w.set_knobs(values))

    def set_latency(self, dependency: str, multiplier: float) -> None:
        """``dependency``'s calls take ``multiplier`` times as long (1.0: normal)."""
        self._write(lambda w: w.set_chaos(dependency, Chaos(latency_multiplier=multiplier)))


Step = tuple[float, Callable[[], None]]  # (seconds after the start, what to do then)


class Timeline(threading.Thread):
    """Runs each step at its time after ``start()``; ``done`` holds (wall-clock time,
    index) of the steps run, for placing them on the load run's clock afterwards.
    ``stop()`` skips what is left. A step that fails is recorded as failed, the rest
    still run: a benchmark must not die mid-run for one write."""

    def __init__(self, steps: Sequence[Step], clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="bench-timeline", daemon=True)
        self.steps = sorted(steps, key=lambda s: s[0])
        self.clock = clock
        self.done: list[tuple[float, int, bool]] = []  # (time.time(), step index, ok)
        self._stop_event = threading.Event()

    def run(self) -> None:
        began = self.clock()
        for index, (at_s, action) in enumerate(self.steps):
            if self._stop_event.wait(max(0.0, began + at_s - self.clock())):
                return
            try:
                action()
                ok = True
            except Exception:  # a lost write is reported, not fatal
                ok = False
            self.done.append((time.time(), index, ok))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
