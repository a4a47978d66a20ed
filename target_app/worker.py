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
from dataclasses import dataclass, field

from redis.exceptions import RedisError, ResponseError

from surgeguard.aio import cancel_and_wait
from target_app.job import (
    TASK_FIELDS,
    DeadLetter,
    Entry,
    Job,
    MalformedJob,
    Outcome,
    RetryLater,
    Succeeded,
    parse_entry,
)
from target_app.job_store import JobStore
from target_app.retry_policy import RetryPolicy
from target_app.tasks import Handler
from target_app.worker_metrics import MALFORMED, WorkerMetrics

log = logging.getLogger("target_app.worker")

SETTLE_BATCH = 500  # outcomes per round trip; bounds one pipeline's size
SETTLE_GRACE_S = 1.0  # after the shutdown timeout, to settle what did finish, seconds
HAND_BACK_TIMEOUT_S = 2.0
HISTORY_PAGE = 500  # own pending entries read per call at start and at stop
REDIS_ERRORS = (RedisError, OSError)


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs. Times in seconds unless the name says ms."""

    consumer: str
    concurrency: int = 64
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    job_timeout_s: float = 10.0
    reclaim_idle_ms: int = 30_000
    shutdown_timeout_s: float = 5.0
    block_ms: int = 1_000  # longest XREADGROUP wait; well under the socket timeout
    promote_period_s: float = 0.05
    sample_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.consumer:
            raise ValueError("consumer must be a non-empty name")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.job_timeout_s <= 0:
            raise ValueError(f"job_timeout_s must be > 0 seconds, got {self.job_timeout_s}")
        # A job still running must not look abandoned, or another worker runs it too.
        if self.reclaim_idle_ms <= self.job_timeout_s * 1000:
            raise ValueError(
                f"reclaim idle ({self.reclaim_idle_ms} ms) must exceed the job timeout "
                f"({self.job_timeout_s * 1000:g} ms), or running jobs would be taken over"
            )

    @property
    def capacity(self) -> int:
        """Entries a worker holds at most: running, waiting for a slot, or settling.
        Twice the concurrency keeps every slot busy while finished jobs settle."""
        return 2 * self.concurrency

    @property
    def reclaim_period_s(self) -> float:
        return min(5.0, max(0.05, self.reclaim_idle_ms / 2000.0))


@dataclass
class _Held:
    """An entry this worker owns until its outcome is settled (or it is handed back)."""

    entry: Entry
    job: Job | None = None
    begun: bool = False  # the attempt was counted in the job's status
    task: asyncio.Task[None] | None = None


class _Backoff:
    """Waits between tries of a loop that met a Redis error: 50 ms doubling to 2 s."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    async def pause(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 50 == 0:
            log.warning("%s: %s: %s (trying again)", self.what, type(exc).__name__, exc)
        await asyncio.sleep(min(2.0, 0.05 * 2 ** min(self.failures - 1, 6)))

    def reset(self) -> None:
        if self.failures:
            log.info("%s: working again after %d failed tries", self.what, self.failures)
            self.failures = 0


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
        self._handlers = handlers
        self._tasks = {t: TASK_FIELDS[t] for t in handlers}
        self._config = config
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._clock = clock
        self._held: dict[tuple[str, str], _Held] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._in_use = 0
        self._room = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = asyncio.Event()
        self._settled_all = asyncio.Event()
        self._settled_all.set()
        self._stopping = asyncio.Event()
        self._recheck_own = True  # read this consumer's own pending entries first
        self.ready = False
        metrics.concurrency_limit.set(config.concurrency)
        metrics.concurrency_in_use.set_function(lambda: self._in_use)

    @property
    def held(self) -> int:
        """Entries this worker owns right now."""
        return len(self._held)

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
            asyncio.create_task(self._settle_loop(), name="settle"),
            asyncio.create_task(self._sample_loop(), name="sample"),
        ]
        intake = [
            asyncio.create_task(self._read_loop(), name="read"),
            asyncio.create_task(self._reclaim_loop(), name="reclaim"),
            asyncio.create_task(self._promote_loop(), name="promote"),
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

    # -- intake -----------------------------------------------------------------------

    async def _connect(self) -> bool:
        backoff = _Backoff("creating the consumer groups")
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

    async def _read_loop(self) -> None:
        backoff = _Backoff("reading jobs")
        after: dict[str, str] | None = None
        while True:
            if self._recheck_own:
                # Entries delivered to a read or a begin that failed are still ours in
                # Redis: read them again now rather than wait for a reclaim.
                self._recheck_own = False
                after = dict.fromkeys(self._store.streams, "0-0")
            # Wait for a batch worth of room: reading one entry per freed slot would
            # cost a round trip per job.
            await self._wait_for_room(max(1, self._config.capacity // 4))
            room = self._config.capacity - len(self._held)
            try:
                if after:
                    entries = await self._store.read(self._config.consumer, room, 0, after=after)
                    after = _next_page(after, entries, room)
                else:
                    per_stream = max(1, room // len(self._store.streams))
                    entries = await self._store.read(
                        self._config.consumer, per_stream, self._config.block_ms
                    )
                if self._stopping.is_set():
                    return  # read while stopping: left pending, handed back in _finish
                await self._take(entries)
            except REDIS_ERRORS as exc:
                self._recheck_own = True
                await self._recover(backoff, exc)
                continue
            backoff.reset()

    async def _reclaim_loop(self) -> None:
        backoff = _Backoff("reclaiming stuck jobs")
        while True:
            # At once on start: jobs handed back by a stopped worker are due right away.
            room = self._config.capacity - len(self._held)
            if room > 0:
                try:
                    entries = await self._store.reclaim(
                        self._config.consumer, self._config.reclaim_idle_ms, room
                    )
                    await self._take(entries, reclaimed=True)
                except REDIS_ERRORS as exc:
                    await self._recover(backoff, exc)
                    continue
                backoff.reset()
            await asyncio.sleep(self._config.reclaim_period_s)

    async def _promote_loop(self) -> None:
        backoff = _Backoff("moving due retries back")
        while True:
            await asyncio.sleep(self._config.promote_period_s)
            try:
                await self._store.promote_due()
            except REDIS_ERRORS as exc:
                await backoff.pause(exc)
                continue
            backoff.reset()

    async def _sample_loop(self) -> None:
        while True:
            # A missed sample only leaves the gauges a period older; no need to shout.
            with contextlib.suppress(*REDIS_ERRORS):
                self._metrics.observe(await self._store.sample())
            await asyncio.sleep(self._config.sample_period_s)

    async def _recover(self, backoff: _Backoff, exc: BaseException) -> None:
        """After a Redis error: recreate the groups if they are gone, else back off."""
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            with contextlib.suppress(*REDIS_ERRORS):
                await self._store.ensure_groups()
                return
        await backoff.pause(exc)

    async def _wait_for_room(self, wanted: int) -> None:
        while self._config.capacity - len(self._held) < wanted:
            self._room.clear()
            await self._room.wait()

    async def _take(self, entries: list[Entry], *, reclaimed: bool = False) -> None:
        """Own ``entries``: dead-letter what is no job, count the attempt of the rest
        (one round trip), and start them."""
        fresh = [e for e in entries if e.key not in self._held]
        if reclaimed and fresh:
            self._metrics.reclaimed.inc(len(fresh))
            log.info("took over %d job(s) held too long by another worker", len(fresh))
        jobs: list[Job] = []
        for entry in fresh:
            held = self._held[entry.key] = _Held(entry)
            try:
                held.job = parse_entry(entry, self._tasks)
            except MalformedJob as exc:
                log.warning("%s %s is no job: %s", entry.stream, entry.entry_id, exc)
                self._submit(DeadLetter(entry, None, f"malformed job: {exc}", 0))
                continue
            jobs.append(held.job)
        if not jobs:
            return
        try:
            began = await self._store.begin(jobs)
        except BaseException:
            # Still ours in Redis: the read loop reads them again once Redis answers.
            for job in jobs:
                self._release(job.key)
            self._recheck_own = True
            raise
        max_attempts = self._config.policy.max_attempts
        for job, result in zip(jobs, began, strict=True):
            held = self._held[job.key]
            if result.error is not None:
                error = f"could not record the job's state: {result.error}"
                self._submit(DeadLetter(held.entry, job, error, 0, report=False))
            elif result.attempts == -2:  # settled by another worker meanwhile
                self._release(job.key)
            elif result.attempts == -1:  # its effect already happened: just settle it
                self._submit(Succeeded(job, None))
            elif result.attempts > max_attempts:  # its runs ended without a result
                held.begun = True
                error = result.last_error or "no result: the worker running it stopped"
                self._submit(DeadLetter(held.entry, job, error, max_attempts))
            else:
                held.begun = True
                held.task = asyncio.create_task(self._run(job, result.attempts))

    # -- running ----------------------------------------------------------------------

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
        self._submit(outcome)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"timed out after {self._config.job_timeout_s:g} s"
        return f"{type(exc).__name__}: {exc}"

    def _failed(self, job: Job, attempts: int, error: str) -> Outcome:
        self._metrics.failed[job.task].inc()
        policy = self._config.policy
        if policy.gives_up(attempts):
            log.warning("%s failed %d times, giving up: %s", job.idempotency_key, attempts, error)
            return DeadLetter(self._held[job.key].entry, job, error, attempts)
        delay_s = policy.delay_s(attempts, self._rng.random())
        return RetryLater(job, max(1, round(delay_s * 1000)), error)

    # -- settling ---------------------------------------------------------------------

    def _submit(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcomes_ready.set()
        self._settled_all.clear()

    async def _settle_loop(self) -> None:
        backoff = _Backoff("settling finished jobs")
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
                self._release(outcome.key)
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

    def _release(self, key: tuple[str, str]) -> None:
        self._held.pop(key, None)
        self._room.set()

    # -- the end ----------------------------------------------------------------------

    async def _finish(self, deadline: float) -> None:
        """Let running jobs end by ``deadline`` (clock seconds), settle what finished,
        and hand back everything else this consumer owns."""
        running = [h.task for h in self._held.values() if h.task and not h.task.done()]
        if running:
            log.info("stopping: waiting for %d running job(s)", len(running))
            _, late = await asyncio.wait(running, timeout=max(0.0, deadline - self._clock()))
            await _cancel(list(late))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._settled_all.wait(), max(SETTLE_GRACE_S, deadline - self._clock())
            )
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT_S):
                await self._hand_back_all()
        except (*REDIS_ERRORS, TimeoutError) as exc:
            log.warning(
                "could not hand back %d job(s) (%s); others take them over after %d ms idle",
                len(self._held),
                exc,
                self._config.reclaim_idle_ms,
            )

    async def _hand_back_all(self) -> None:
        """Hand back held entries, and any this consumer owns unknowingly (delivered to
        a read that was cancelled); forget the consumer when it owns nothing."""
        consumer = self._config.consumer
        owned: list[tuple[Entry, Job | None, bool]] = [
            (h.entry, h.job, h.begun) for h in self._held.values()
        ]
        after: dict[str, str] | None = dict.fromkeys(self._store.streams, "0-0")
        while after:
            entries = await self._store.read(consumer, HISTORY_PAGE, 0, after=after)
            owned += [(e, None, False) for e in entries if e.key not in self._held]
            after = _next_page(after, entries, HISTORY_PAGE)
        if owned:
            await self._store.hand_back(consumer, owned, self._config.reclaim_idle_ms)
            log.info("handed back %d job(s) for other workers to take over", len(owned))
            self._held.clear()
        else:
            await self._store.forget_consumer(consumer)


def _next_page(after: dict[str, str], entries: list[Entry], page: int) -> dict[str, str] | None:
    """Where to continue reading this consumer's own entries; None when all are read.
    A stream that returned fewer than ``page`` entries has no more."""
    following: dict[str, str] = {}
    for stream in after:
        mine = [e.entry_id for e in entries if e.stream == stream]
        if len(mine) >= page:
            following[stream] = mine[-1]
    return following or None


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> list[BaseException]:
    """Cancel ``tasks``, wait until each has really ended (a cancellation can be lost
    inside a redis-py call: ``cancel_and_wait`` repeats it), and return the errors of
    those that failed."""
    await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
    return [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
