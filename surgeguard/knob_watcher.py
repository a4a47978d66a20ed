"""The replica side of the control plane: follow the document, apply it, fail static.

A pub/sub notice makes a change arrive at once; polling every ``poll_interval_s``
catches what a dropped subscription missed. A document is validated whole before
any of it is applied. If Redis goes away the replica keeps its last knobs, keeps
serving, and ``staleness_s`` says for how long it has not heard from the plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard.aio import cancel_and_wait
from surgeguard.controlplane import (
    CONTROL_CHANNEL,
    ControlDocumentError,
    ControlState,
    read_state,
)
from surgeguard.knobs import KnobError

log = logging.getLogger("surgeguard.control")

Apply = Callable[[ControlState], None]


class KnobWatcher:
    def __init__(
        self,
        client: aioredis.Redis,
        apply: Apply,
        *,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._apply = apply
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self.applied_version = -1
        self.last_ok = clock()  # start-up values count as fresh
        self.errors = 0
        self.rejected_documents = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def staleness_s(self) -> float:
        """Seconds since the control plane was last read successfully."""
        return max(0.0, self._clock() - self.last_ok)

    async def refresh(self) -> bool:
        """Read the document once and apply it if it is new. True when Redis answered."""
        try:
            state = await read_state(self._client)
        except ControlDocumentError as exc:
            self._refuse(str(exc))
            self.last_ok = self._clock()  # Redis answered; the document is what's wrong
            return True
        except (RedisError, OSError) as exc:
            self._fail(exc)
            return False
        self.last_ok = self._clock()
        if state.version != self.applied_version:
            try:
                self._apply(state)
            except (KnobError, ValueError) as exc:
                self._refuse(str(exc))
                return True
            self.applied_version = state.version
            log.info("applied control document version %d", state.version)
        self.last_error = ""  # Redis answered and what it holds is applied
        return True

    def _refuse(self, why: str) -> None:
        self.rejected_documents += 1
        if why != self.last_error:
            log.error("refused control document, keeping current knobs: %s", why)
        self.last_error = why

    def _fail(self, exc: BaseException) -> None:
        self.errors += 1
        why = f"control plane unreachable: {exc}"
        if why != self.last_error:
            log.warning("%s; keeping the last knobs", why)
        self.last_error = why

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="knob-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def run(self) -> None:
        """Forever: subscribe, then refresh on every notice and every poll period."""
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(CONTROL_CHANNEL)
                await self.refresh()  # anything published before we subscribed
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_interval_s
                    )
                    if not await self.refresh() and message is None:
                        break
            except (RedisError, OSError) as exc:
                self._fail(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Redis is away: poll (cheaply) until it answers, then resubscribe.
            while not await self.refresh():  # noqa: ASYNC110 - polling Redis, not a flag
                await asyncio.sleep(self.poll_interval_s)
