"""How a worker's loops outlast Redis going away: which errors count as Redis's, and
the wait between tries of a loop that met one."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

log = logging.getLogger("surgeguard_target_app.worker.worker")

REDIS_ERRORS = (RedisError, OSError)


class Backoff:
    """Waits between tries of a loop that met a Redis error: 50 ms doubling to 2 s."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    async def pause(self, exc: BaseException) -> None:
        self.failures += 1
        # The first failure and every 50th: enough to see an outage without a log flood.
        if self.failures == 1 or self.failures % 50 == 0:
            log.warning("%s: %s: %s (trying again)", self.what, type(exc).__name__, exc)
        await asyncio.sleep(min(2.0, 0.05 * 2 ** min(self.failures - 1, 6)))

    def reset(self) -> None:
        if self.failures:
            log.info("%s: working again after %d failed tries", self.what, self.failures)
            self.failures = 0
