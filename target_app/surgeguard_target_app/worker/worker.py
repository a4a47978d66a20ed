"""The worker: takes jobs from the streams with a consumer group and runs them
concurrently on asyncio; each job at least once, its effect exactly once.

Five loops share one event loop:

- read: XREADGROUP new entries, only while the worker holds fewer than it can start
  soon (so one worker never hoards a backlog that others could run);
- reclaim: XAUTOCLAIM entries some worker has held longer than ``reclaim_idle_ms``
  (it crashed, or hangs); they run again here;
- promote: move failed jobs whose backoff is over back to their streams;
- settle: apply finished jobs' outcomes (effect + record + ack, or retry, or dead
  letter), batched: one round trip for everything that finished meanwhile;
- sample: backlog and lag for the metrics.

The first three are ``worker_intake.Intake``; running jobs and settling their outcomes
is ``job_runner.JobRunner``. This module starts them all and stops them.

Redis going away never ends a worker: each loop backs off and tries again, and what
it held stays pending in Redis, to be settled later or reclaimed. ``stop()`` (SIGTERM)
stops the intake, lets running jobs finish within ``shutdown_timeout_s``, settles
them, and hands every other held entry back for the next reclaim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from surgeguard.aio import cancel_and_wait
from surgeguard_target_app.jobs.job import TASK_FIELDS
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.worker.backoff import REDIS_ERRORS, Backoff
from surgeguard_target_app.worker.config import WorkerConfig
from surgeguard_target_app.worker.intake import Intake
from surgeguard_target_app.worker.metrics import WorkerMetrics
from surgeguard_target_app.worker.runner import JobRunner
from surgeguard_target_app.worker.tasks import Handler

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("surgeguard_target_app.worker.worker")

SETTLE_GRACE_S = 1.0  # after the shutdown timeout, to settle what did finish, seconds
HAND_BACK_TIMEOUT_S = 2.0


class Worker:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, Handler],
        config: WorkerConfig,
        metrics: WorkerMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = sorted(set(handlers) - set(TASK_FIELDS))
        if unknown:
            raise ValueError(f"no field list for task(s) {unknown}; add them to TASK_FIELDS")
        self._store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._stopping = asyncio.Event()
        self._runner = JobRunner(
            store, handlers, config, metrics, rng=rng or random.Random(), clock=clock
        )
        self._intake = Intake(
            store,
            {t: TASK_FIELDS[t] for t in handlers},
            config,
            metrics,
            self._runner,
            self._stopping,
        )
        self.ready = False

    @property
    def held(self) -> int:
        """Entries this worker owns right now."""
        return len(self._runner.held)

    async def _until_stopped(self) -> None:
        await self._stopping.wait()

    def stop(self) -> None:
        """Ask ``run()`` to shut down gracefully (safe from a signal handler)."""
        self._stopping.set()

    async def run(self) -> None:
        """Work until ``stop()``; then finish or hand back what is held, and return."""
        if not await self._connect():
            return
        self.ready = True
        background = [
            asyncio.create_task(self._runner.settle_loop(), name="settle"),
            asyncio.create_task(self._sample_loop(), name="sample"),
        ]
        intake = [
            asyncio.create_task(self._intake.read_loop(), name="read"),
            asyncio.create_task(self._intake.reclaim_loop(), name="reclaim"),
            asyncio.create_task(self._intake.promote_loop(), name="promote"),
        ]
        stopping = asyncio.create_task(self._until_stopped())
        try:
            await asyncio.wait([*intake, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.ready = False
            deadline = self._clock() + self._config.shutdown_timeout_s
            stopping.cancel()
            crashed = await _cancel(intake)
            await self._finish(deadline)
            await _cancel(background)
        for error in crashed:  # a loop that ended on its own is a bug: say so loudly
            raise error

    async def _connect(self) -> bool:
        backoff = Backoff("creating the consumer groups")
        while not self._stopping.is_set():
            try:
                await self._store.ensure_groups()
                backoff.reset()
                return True
            except REDIS_ERRORS as exc:
                waiting = asyncio.create_task(backoff.pause(exc))
                stopping = asyncio.create_task(self._until_stopped())
                await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
                await _cancel([waiting, stopping])
        return False

    async def _sample_loop(self) -> None:
        while True:
            # A missed sample only leaves the gauges a period older; no need to shout.
            with contextlib.suppress(*REDIS_ERRORS):
                self._metrics.observe(await self._store.sample())
            await asyncio.sleep(self._config.sample_period_s)

    async def _finish(self, deadline: float) -> None:
        """Let running jobs end by ``deadline`` (clock seconds), settle what finished,
        and hand back everything else this consumer owns."""
        running = self._runner.running()
        if running:
            log.info("stopping: waiting for %d running job(s)", len(running))
            _, late = await asyncio.wait(running, timeout=max(0.0, deadline - self._clock()))
            await _cancel(list(late))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._runner.wait_settled(), max(SETTLE_GRACE_S, deadline - self._clock())
            )
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                await self._intake.hand_back_all()
        except (*REDIS_ERRORS, TimeoutError) as exc:
            log.warning(
                "could not hand back %d job(s) (%s); others take them over after %d ms idle",
                len(self._runner.held),
                exc,
                self._config.reclaim_idle_ms,
            )


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> list[BaseException]:
    """Cancel ``tasks``, wait until each has really ended (a cancellation can be lost
    inside a redis-py call: ``cancel_and_wait`` repeats it), and return the errors of
    those that failed."""
    await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
    return [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
