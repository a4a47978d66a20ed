"""How a worker takes entries from the job streams and gives them back.

Three loops bring work in: read (XREADGROUP new entries, only while the worker holds
fewer than it can start soon, so one worker never hoards a backlog that others could
run), reclaim (XAUTOCLAIM entries some worker has held longer than ``reclaim_idle_ms``)
and promote (failed jobs whose backoff is over go back to their streams). Taking an
entry counts the attempt in Redis and hands the job to the ``JobRunner``; at the end,
``hand_back_all`` returns whatever is still held for another worker's next reclaim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from redis.exceptions import ResponseError

from surgeguard_target_app.jobs.job import (
    DeadLetter,
    Entry,
    Job,
    MalformedJob,
    Succeeded,
    parse_entry,
)
from surgeguard_target_app.jobs.store import JobStore
from surgeguard_target_app.worker.backoff import REDIS_ERRORS, Backoff
from surgeguard_target_app.worker.config import WorkerConfig
from surgeguard_target_app.worker.metrics import WorkerMetrics
from surgeguard_target_app.worker.runner import Held, JobRunner

log = logging.getLogger("surgeguard_target_app.worker.worker")

HISTORY_PAGE = 500  # own pending entries read per call at start and at stop


class Intake:
    """The read, reclaim and promote loops of one worker, feeding ``runner``."""

    def __init__(
        self,
        store: JobStore,
        tasks: Mapping[str, tuple[str, ...]],
        config: WorkerConfig,
        metrics: WorkerMetrics,
        runner: JobRunner,
        stopping: asyncio.Event,
    ) -> None:
        """``tasks``: the fields of each task this worker runs; ``stopping``: set when
        the worker shuts down (a read that returns then is left for the hand-back)."""
        self._store = store
        self._tasks = tasks
        self._config = config
        self._metrics = metrics
        self._runner = runner
        self._stopping = stopping
        self._recheck_own = True  # read this consumer's own pending entries first

    async def read_loop(self) -> None:
        backoff = Backoff("reading jobs")
        after: dict[str, str] | None = None
        while True:
            if self._recheck_own:
                # Entries delivered to a read or a begin that failed are still ours in
                # Redis: read them again now rather than wait for a reclaim.
                self._recheck_own = False
                after = dict.fromkeys(self._store.streams, "0-0")
            # Wait for a batch worth of room: reading one entry per freed slot would
            # cost a round trip per job.
            await self._runner.wait_for_room(max(1, self._config.capacity // 4))
            room = self._runner.room
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
                    return  # read while stopping: left pending, handed back at the end
                await self._take(entries)
            except REDIS_ERRORS as exc:
                self._recheck_own = True
                await self._recover(backoff, exc)
                continue
            backoff.reset()

    async def reclaim_loop(self) -> None:
        backoff = Backoff("reclaiming stuck jobs")
        while True:
            # At once on start: jobs handed back by a stopped worker are due right away.
            room = self._runner.room
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

    async def promote_loop(self) -> None:
        backoff = Backoff("moving due retries back")
        while True:
            await asyncio.sleep(self._config.promote_period_s)
            try:
                await self._store.promote_due()
            except REDIS_ERRORS as exc:
                await backoff.pause(exc)
                continue
            backoff.reset()

    async def _recover(self, backoff: Backoff, exc: BaseException) -> None:
        """After a Redis error: recreate the groups if they are gone, else back off."""
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            with contextlib.suppress(*REDIS_ERRORS):
                await self._store.ensure_groups()
                return
        await backoff.pause(exc)

    async def _take(self, entries: list[Entry], *, reclaimed: bool = False) -> None:
        """Own ``entries``: dead-letter what is no job, count the attempt of the rest
        (one round trip), and start them."""
        held_now = self._runner.held
        fresh = [e for e in entries if e.key not in held_now]
        if reclaimed and fresh:
            self._metrics.reclaimed.inc(len(fresh))
            log.info("took over %d job(s) held too long by another worker", len(fresh))
        jobs: list[Job] = []
        for entry in fresh:
            held = held_now[entry.key] = Held(entry)
            try:
                held.job = parse_entry(entry, self._tasks)
            except MalformedJob as exc:
                log.warning("%s %s is no job: %s", entry.stream, entry.entry_id, exc)
                self._runner.submit(DeadLetter(entry, None, f"malformed job: {exc}", 0))
                continue
            jobs.append(held.job)
        if not jobs:
            return
        try:
            began = await self._store.begin(jobs)
        except BaseException:
            # Still ours in Redis: the read loop reads them again once Redis answers.
            for job in jobs:
                self._runner.release(job.key)
            self._recheck_own = True
            raise
        max_attempts = self._config.policy.max_attempts
        for job, result in zip(jobs, began, strict=True):
            held = held_now[job.key]
            if result.error is not None:
                error = f"could not record the job's state: {result.error}"
                self._runner.submit(DeadLetter(held.entry, job, error, 0, report=False))
            elif result.attempts == -2:  # settled by another worker meanwhile
                self._runner.release(job.key)
            elif result.attempts == -1:  # its effect already happened: just settle it
                self._runner.submit(Succeeded(job, None))
            elif result.attempts > max_attempts:  # its runs ended without a result
                held.begun = True
                error = result.last_error or "no result: the worker running it stopped"
                self._runner.submit(DeadLetter(held.entry, job, error, max_attempts))
            else:
                held.begun = True
                self._runner.start(job, result.attempts)

    async def hand_back_all(self) -> None:
        """Hand back held entries, and any this consumer owns unknowingly (delivered to
        a read that was cancelled); forget the consumer when it owns nothing."""
        consumer = self._config.consumer
        held_now = self._runner.held
        owned: list[tuple[Entry, Job | None, bool]] = [
            (h.entry, h.job, h.begun) for h in held_now.values()
        ]
        after: dict[str, str] | None = dict.fromkeys(self._store.streams, "0-0")
        while after:
            entries = await self._store.read(consumer, HISTORY_PAGE, 0, after=after)
            owned += [(e, None, False) for e in entries if e.key not in held_now]
            after = _next_page(after, entries, HISTORY_PAGE)
        if owned:
            await self._store.hand_back(consumer, owned, self._config.reclaim_idle_ms)
            log.info("handed back %d job(s) for other workers to take over", len(owned))
            held_now.clear()
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
