"""Running and settling the jobs a worker holds.

Each held job runs once per attempt inside a concurrency slot, under the job timeout;
its outcome (success with its effect, a retry after a backoff, or a dead letter) joins
a queue that one loop settles in batches: one round trip for everything that finished
meanwhile. An entry stays held until its outcome is settled (or it is handed back), so
the count of held entries is what keeps a worker from taking more than it can run.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from surgeguard_target_app.jobs.job import DeadLetter, Entry, Job, Outcome, RetryLater, Succeeded
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.worker.backoff import REDIS_ERRORS, Backoff
from surgeguard_target_app.worker.config import WorkerConfig
from surgeguard_target_app.worker.metrics import MALFORMED, WorkerMetrics
from surgeguard_target_app.worker.tasks import Handler

log = logging.getLogger("surgeguard_target_app.worker.worker")

SETTLE_BATCH = 500  # outcomes per round trip; bounds one pipeline's size


@dataclass
class Held:
    """An entry this worker owns until its outcome is settled (or it is handed back)."""

    entry: Entry
    job: Job | None = None
    begun: bool = False  # the attempt was counted in the job's status
    task: asyncio.Task[None] | None = None


class JobRunner:
    """The entries one worker holds, the attempts running on them, and the outcomes
    waiting to be settled."""

    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, Handler],
        config: WorkerConfig,
        metrics: WorkerMetrics,
        *,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._handlers = handlers
        self._config = config
        self._metrics = metrics
        self._rng = rng
        self._clock = clock
        self.held: dict[tuple[str, str], Held] = {}  # by (stream, entry id)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._in_use = 0
        self._room = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = asyncio.Event()
        self._settled_all = asyncio.Event()
        self._settled_all.set()
        metrics.concurrency_limit.set(config.concurrency)
        metrics.concurrency_in_use.set_function(lambda: self._in_use)

    @property
    def room(self) -> int:
        """Entries the worker may still take (entries; 0 or less when full)."""
        return self._config.capacity - len(self.held)

    async def wait_for_room(self, wanted: int) -> None:
        """Return once ``wanted`` more entries may be held."""
        while self.room < wanted:
            self._room.clear()
            await self._room.wait()

    def running(self) -> list[asyncio.Task[None]]:
        """The attempts that have not ended yet."""
        return [h.task for h in self.held.values() if h.task and not h.task.done()]

    async def wait_settled(self) -> None:
        """Return once no outcome waits to be settled."""
        await self._settled_all.wait()

    def release(self, key: tuple[str, str]) -> None:
        """Stop holding the entry ``key`` (settled, or still pending in Redis)."""
        self.held.pop(key, None)
        self._room.set()

    # -- running ----------------------------------------------------------------------

    def start(self, job: Job, attempts: int) -> None:
        """Start the ``attempts``-th attempt of the held ``job``; it waits for a slot."""
        self.held[job.key].task = asyncio.create_task(self._run(job, attempts))

    async def _run(self, job: Job, attempts: int) -> None:
        """One attempt of ``job`` (the ``attempts``-th) inside a concurrency slot."""
        outcome: Outcome
        async with self._slots:
            self._in_use += 1
            started = self._clock()
            try:
                async with asyncio.timeout(self._config.job_timeout_s):
                    effect = await self._handlers[job.task](job)
            except Exception as exc:  # whatever a job raises fails the attempt, not the worker
                outcome = self._failed(job, attempts, self._describe(exc))
            else:
                outcome = Succeeded(job, effect)
            finally:
                self._in_use -= 1
                self._metrics.duration[job.task].observe(self._clock() - started)
        self.submit(outcome)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"timed out after {self._config.job_timeout_s:g} s"
        return f"{type(exc).__name__}: {exc}"

    def _failed(self, job: Job, attempts: int, error: str) -> Outcome:
        self._metrics.failed[job.task].inc()
        policy = self._config.policy
        if policy.gives_up(attempts):
            log.warning("%s failed %d times, giving up: %s", job.idempotency_key, attempts, error)
            return DeadLetter(self.held[job.key].entry, job, error, attempts)
        delay_s = policy.delay_s(attempts, self._rng.random())
        return RetryLater(job, max(1, round(delay_s * 1000)), error)

    # -- settling ---------------------------------------------------------------------

    def submit(self, outcome: Outcome) -> None:
        """Queue ``outcome`` for the settle loop."""
        self._outcomes.append(outcome)
        self._outcomes_ready.set()
        self._settled_all.clear()

    async def settle_loop(self) -> None:
        """Settle queued outcomes in batches, forever; after a Redis error the batch is
        sent again."""
        backoff = Backoff("settling finished jobs")
        while True:
            await self._outcomes_ready.wait()
            batch = self._outcomes[:SETTLE_BATCH]
            del self._outcomes[:SETTLE_BATCH]
            try:
                results = await self._store.settle(batch)
            except REDIS_ERRORS as exc:
                self._outcomes[:0] = batch  # every script is safe to send again
                await backoff.pause(exc)
                continue
            except BaseException:
                self._outcomes[:0] = batch
                raise
            backoff.reset()
            for outcome, result in zip(batch, results, strict=True):
                self._count(outcome, result)
                self.release(outcome.key)
            if not self._outcomes:
                self._outcomes_ready.clear()
                self._settled_all.set()

    def _count(self, outcome: Outcome, result: int | Exception) -> None:
        if isinstance(result, Exception):
            # Left pending in Redis; a later reclaim tries it again.
            log.error("could not settle %s %s: %s", *outcome.key, result)
            return
        if isinstance(outcome, Succeeded):
            task = outcome.job.task
            if result == 1:
                self._metrics.processed[task].inc()
            elif result == 0:
                self._metrics.duplicate[task].inc()
        elif isinstance(outcome, DeadLetter) and result == 1:
            task = outcome.job.task if outcome.job else MALFORMED
            self._metrics.dead[task].inc()
