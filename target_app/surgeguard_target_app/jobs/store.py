"""The job streams in Redis: reading with a consumer group, and every change of a
job's state as one atomic Lua script.

Each script that settles an entry first checks that the entry is still pending in the
group (XPENDING); if another worker already settled it, the script does nothing. So a
job that ran twice (a slow worker and the one that reclaimed it) is settled once, and a
batch can be sent again after a broken connection without doing anything twice.

Settling deletes the entry (XACK then XDEL, in the same script), so a job stream holds
exactly the unfinished jobs: its length is the backlog (see ``surgeguard_target_app.jobs.streams``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from surgeguard_target_app.jobs.job import (
    DeadLetter,
    Entry,
    Job,
    Outcome,
    RetryLater,
    Succeeded,
    malformed_done_key,
)
from surgeguard_target_app.jobs.scripts import (
    BEGIN,
    DEAD,
    HAND_BACK,
    PROMOTE,
    RETRY,
    SUCCEED,
    Script,
)
from surgeguard_target_app.jobs.streams import (
    COUNTER_FIELDS_MAX,
    DEAD_LETTERS_MAXLEN,
    DEAD_STREAM,
    GROUP,
    JOB_STREAMS,
    OUTBOX_MAXLEN,
    RETRY_KEY,
)

DONE_TTL_S = 7 * 24 * 3600  # how long a job's idempotency record outlives it, seconds
JOB_STATE_TTL_S = 7 * 24 * 3600  # status hashes of jobs without a signup, seconds

Call = tuple[Script, Sequence[str], Sequence[str | int]]


@dataclass(frozen=True)
class Began:
    """What ``begin`` found. ``attempts`` counts this run; -1: the job's effect already
    happened; -2: the entry was settled by someone else; ``error`` when the script
    itself failed (the job's status hash cannot be written)."""

    attempts: int
    last_error: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Sample:
    """One look at the queues: jobs per stream, age of each stream's oldest job
    (seconds, 0 when empty), retries waiting out a backoff, and dead letters."""

    pending: dict[str, int]
    oldest_age_s: dict[str, float]
    retry_scheduled: int
    dead_letters: int


class JobStore:
    """The job streams of one Redis, as seen by workers of consumer group ``group``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        group: str = GROUP,
        streams: Sequence[str] = JOB_STREAMS,
        done_ttl_s: int = DONE_TTL_S,
        effect_maxlen: int = OUTBOX_MAXLEN,
        dead_letters_maxlen: int = DEAD_LETTERS_MAXLEN,
        counter_fields_max: int = COUNTER_FIELDS_MAX,
    ) -> None:
        """``effect_maxlen``: entries a stream written by a job's effect (the outbox) keeps,
        ``dead_letters_maxlen``: dead letters kept; both trimmed approximately (MAXLEN ~,
        the oldest go first), so they may run a little over. ``counter_fields_max``: names
        a counter hash (the analytics counts) holds; later names count under ``other``."""
        self._client = client
        self.group = group
        self.streams = tuple(streams)
        self._done_ttl_s = done_ttl_s
        self._effect_maxlen = effect_maxlen
        self._dead_letters_maxlen = dead_letters_maxlen
        self._counter_fields_max = counter_fields_max
        self._reclaim_cursor = dict.fromkeys(self.streams, "0-0")

    # -- reading ----------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream (and the stream), once.

        From id 0: jobs queued before any worker ever ran are work too."""
        for stream in self.streams:
            try:
                await self._client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(
        self, consumer: str, count: int, block_ms: int, *, after: dict[str, str] | None = None
    ) -> list[Entry]:
        """New entries (up to ``count`` per stream, waiting up to ``block_ms``), or,
        with ``after``, this consumer's own pending entries past those ids (no wait)."""
        ids: dict[Any, Any] = after if after is not None else dict.fromkeys(self.streams, ">")
        reply: Any = await self._client.xreadgroup(
            self.group,
            consumer,
            ids,
            count=count,
            block=None if after is not None else block_ms,
        )
        entries: list[Entry] = []
        for stream, items in reply or []:
            name = _text(stream)
            entries += [Entry(name, _text(i), f) for i, f in items if f is not None]
        return entries

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending longer than ``min_idle_ms`` with any consumer
        (XAUTOCLAIM), up to ``count`` per stream, resuming where the last call ended."""
        entries: list[Entry] = []
        for stream in self.streams:
            reply = await self._client.xautoclaim(
                stream,
                self.group,
                consumer,
                min_idle_ms,
                start_id=self._reclaim_cursor[stream],
                count=count,
            )
            self._reclaim_cursor[stream] = _text(reply[0])
            # Redis 6.2 lists an entry deleted by hand as (None, None): nothing to run.
            entries += [Entry(stream, _text(i), f) for i, f in reply[1] if i is not None and f]
        return entries

    # -- changing job state -----------------------------------------------------------

    async def begin(self, jobs: Sequence[Job]) -> list[Began]:
        """Mark each job processing and count the attempt; one round trip."""
        calls: list[Call] = [
            (
                BEGIN,
                (job.stream, job.done_key, job.status_key),
                (
                    self.group,
                    job.entry_id,
                    JOB_STATE_TTL_S,
                    "0" if job.task == "welcome_email" else "1",
                ),
            )
            for job in jobs
        ]
        began: list[Began] = []
        for reply in await self._run(calls):
            if isinstance(reply, Exception):
                began.append(Began(0, error=str(reply)))
            else:
                last_error = _text(reply[1]) if len(reply) > 1 and reply[1] else None
                began.append(Began(int(reply[0]), last_error))
        return began

    async def settle(self, outcomes: Sequence[Outcome]) -> list[int | Exception]:
        """Apply each outcome atomically; one round trip. Per outcome: -2 when the entry
        was already settled elsewhere, 0 when a record said it was done before, 1 when
        this call settled it, or the error of that one script."""
        replies = await self._run([self._settle_call(o) for o in outcomes])
        return [r if isinstance(r, Exception) else int(r) for r in replies]

    def _settle_call(self, outcome: Outcome) -> Call:
        if isinstance(outcome, Succeeded):
            job, effect = outcome.job, outcome.effect
            kind, key, args = (
                (effect.kind, effect.key, effect.args) if effect else ("none", job.done_key, ())
            )
            bound = self._counter_fields_max if kind == "hincrby" else self._effect_maxlen
            return (
                SUCCEED,
                (job.stream, job.done_key, job.status_key, key),
                (self.group, job.entry_id, self._done_ttl_s, kind, bound, *args),
            )
        if isinstance(outcome, RetryLater):
            job = outcome.job
            member = json.dumps(
                {
                    "stream": job.stream,
                    "entry": job.entry_id,  # makes the member unique
                    "fields": [x for pair in job.fields.items() for x in pair],
                }
            )
            return (
                RETRY,
                (job.stream, job.done_key, job.status_key, RETRY_KEY),
                (self.group, job.entry_id, outcome.delay_ms, outcome.error, member),
            )
        return self._dead_call(outcome)

    def _dead_call(self, dead: DeadLetter) -> Call:
        entry, job = dead.entry, dead.job
        done_key = job.done_key if job else malformed_done_key(entry)
        status_key = job.status_key if job else done_key
        letter = {
            "stream": entry.stream,
            "entry_id": entry.entry_id,
            "task": dead.task,
            "idempotency_key": job.idempotency_key if job else "",
            "signup_id": (job.signup_id or "") if job else "",
            "attempts": str(dead.attempts),
            "error": dead.error,
            "fields": json.dumps(entry.text_fields(), sort_keys=True),
        }
        return (
            DEAD,
            (entry.stream, done_key, status_key, DEAD_STREAM),
            (
                self.group,
                entry.entry_id,
                self._done_ttl_s,
                dead.error,
                dead.attempts,
                "1" if job is not None and dead.report else "0",
                self._dead_letters_maxlen,
                *[x for pair in letter.items() for x in pair],
            ),
        )

    async def hand_back(
        self, consumer: str, entries: Sequence[tuple[Entry, Job | None, bool]], idle_ms: int
    ) -> None:
        """Give held entries back (``(entry, job, begun)`` each): still pending, but
        idle for ``idle_ms`` so another worker's next reclaim takes them at once."""
        calls: list[Call] = []
        for entry, job, begun in entries:
            done_key = job.done_key if job else "surgeguard:none"
            status_key = job.status_key if job else done_key
            calls.append(
                (
                    HAND_BACK,
                    (entry.stream, done_key, status_key),
                    (self.group, entry.entry_id, consumer, idle_ms, "1" if begun and job else "0"),
                )
            )
        for reply in await self._run(calls):
            if isinstance(reply, Exception):
                raise reply

    async def promote_due(self, limit: int = 1_000) -> int:
        """Move retries whose backoff is over back to their streams; returns how many."""
        [moved] = await self._run([(PROMOTE, (RETRY_KEY,), (limit,))])
        if isinstance(moved, Exception):
            raise moved
        return int(moved)

    async def forget_consumer(self, consumer: str) -> bool:
        """Remove ``consumer`` from the group if it holds nothing (else keep it: deleting
        a consumer drops its pending entries, which would then never be reclaimed)."""
        for stream in self.streams:
            summary = await self._client.xpending_range(
                stream, self.group, min="-", max="+", count=1, consumername=consumer
            )
            if summary:
                return False
        for stream in self.streams:
            await self._client.xgroup_delconsumer(stream, self.group, consumer)
        return True

    # -- looking ----------------------------------------------------------------------

    async def sample(self) -> Sample:
        """Backlog, oldest job age and side queues, in one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.time()
            for stream in self.streams:
                pipe.xlen(stream)
                pipe.xrange(stream, count=1)
            pipe.zcard(RETRY_KEY)
            pipe.xlen(DEAD_STREAM)
            replies = await pipe.execute()
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        pending: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for i, stream in enumerate(self.streams):
            length, first = replies[1 + 2 * i], replies[2 + 2 * i]
            pending[stream] = int(length)
            # An entry id starts with its creation time in ms (Redis's clock).
            born_ms = int(_text(first[0][0]).split("-")[0]) if first else now_ms
            oldest[stream] = max(0.0, (now_ms - born_ms) / 1000.0)
        return Sample(pending, oldest, int(replies[-2]), int(replies[-1]))

    # -- scripts ----------------------------------------------------------------------

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run script calls in one pipeline; a script Redis does not know yet (first
        use, or Redis restarted) is loaded and its calls sent again. Errors of single
        calls come back in their place; a lost connection raises."""
        if not calls:
            return []
        replies = await self._pipeline(calls)
        retry = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if retry:
            for script in {calls[i][0] for i in retry}:
                await self._client.script_load(script.source)
            again = await self._pipeline([calls[i] for i in retry])
            for i, reply in zip(retry, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
