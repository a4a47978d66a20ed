"""Event-loop lag: how late a timer fires on the service's own loop.

Every admitted request's latency includes the time its callbacks wait for the loop.
When another process takes the CPU (a load generator on the same machine), that wait
grows although the replica's own work does not, and a smaller concurrency limit
cannot shorten it. The controller tells the two apart by comparing this lag with the
admitted p99 and with the process's CPU (``process_cpu_seconds_total``).

One task sleeps ``interval_s`` at a time and records how much later than asked it
woke, into a lock-free histogram (``surgeguard.fastmetrics``) exported at scrape
time: one wakeup per interval, nothing on the request path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from surgeguard.aio import cancel_and_wait
from surgeguard.fastmetrics import LocalFamilies, LocalHistogram
from surgeguard.metric_names import EVENT_LOOP_LAG_SECONDS

# 0.5 ms (an idle loop's timer jitter) to 2 s (a loop starved for seconds), seconds;
# dense around 50-300 ms, where lag starts to matter against a 250 ms SLO.
LAG_EDGES_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
)


class LoopLagMonitor:
    """Measures the lag of the loop it runs on. ``interval_s``: seconds between
    wakeups; ``clock``: seconds, the same clock the loop's timers use;
    ``sleep``: ``asyncio.sleep`` (a test passes one that moves a fake clock)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self.histogram = LocalHistogram(LAG_EDGES_S)
        # Clock time of the last wakeup: the loop's heartbeat (a health check reads it
        # from another thread: one float, written atomically).
        self.last_wakeup = clock()
        families = LocalFamilies()
        families.histogram(
            EVENT_LOOP_LAG_SECONDS,
            f"How late a {interval_s * 1000:g} ms timer fired on the service's event loop, "
            "seconds (time this loop's callbacks waited for the CPU or for each other).",
            [],
            {(): self.histogram},
        )
        registry.register(families)
        self._task: asyncio.Task[None] | None = None

    async def run(self, wakeups: int | None = None) -> None:
        """Measure until cancelled (or for ``wakeups`` wakeups, for tests)."""
        done = 0
        while wakeups is None or done < wakeups:
            asked_at = self._clock()
            await self._sleep(self.interval_s)
            woke = self.last_wakeup = self._clock()
            # A timer may fire up to the clock's resolution early: that is no lag.
            self.histogram.observe(max(0.0, woke - asked_at - self.interval_s))
            done += 1

    def start(self) -> None:
        """Start measuring on the running loop (from the service's lifespan)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
