"""A remote API follows the control plane's chaos for its own name, read-only.

The controller's ``PUT /api/v1/chaos/{dependency}`` writes the control document in
Redis; every replica and this process read it. Here only ``chaos[name]`` matters, and
applying it in the one process every replica calls slows the API for all of them at
once, as a third-party API would be. Polling is enough (a drill is not sub-second).
Fail static, like the replicas' watcher: Redis away or a document refused keeps the
chaos last applied; a document that is not newer (gone, or an older history) too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard.aio import cancel_and_wait
from surgeguard.chaos import CALM, Chaos
from surgeguard.controlplane import ControlDocumentError, read_state

log = logging.getLogger("surgeguard_target_app.remote")


class ChaosFollower:
    """Every ``poll_interval_s`` seconds read the control document and hand
    ``chaos[name]`` (calm when absent) to ``apply`` when it changed."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        apply: Callable[[Chaos], None],
        *,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._client = client
        self._name = name
        self._apply = apply
        self.poll_interval_s = poll_interval_s
        self.chaos = CALM
        self.applied_version = -1
        self._epoch = ""
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Read the document once; True when Redis answered with a usable one."""
        try:
            state = await read_state(self._client)
        except (ControlDocumentError, RedisError, OSError) as exc:
            self._complain(f"keeping chaos {self._describe(self.chaos)}: {exc}")
            return False
        if not state.newer_than(self._epoch, self.applied_version):
            return True
        chaos = state.chaos.get(self._name, CALM)
        if chaos != self.chaos:
            log.info(
                "control v%d: chaos %s %s -> %s",
                state.version,
                self._name,
                self._describe(self.chaos),
                self._describe(chaos),
            )
            self._apply(chaos)
            self.chaos = chaos
        self.applied_version, self._epoch = state.version, state.epoch
        self.last_error = ""
        return True

    def _complain(self, why: str) -> None:
        if why != self.last_error:  # once per distinct trouble, not every poll
            log.warning("%s", why)
        self.last_error = why

    @staticmethod
    def _describe(chaos: Chaos) -> str:
        return f"latency x{chaos.latency_multiplier:g} errors {chaos.error_rate:.0%}"

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"chaos-{self._name}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
