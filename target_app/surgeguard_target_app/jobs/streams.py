"""Deferred work leaves the request path here: signups become jobs in Redis streams.

A signup is stored atomically (MULTI): its status hash, the welcome-email job and
the analytics event. ``202`` is only answered after Redis confirmed all three, so a
``202`` always means the job is durably queued; any Redis error becomes a ``503``.

The keys of the job system (``surgeguard_target_app.worker.worker`` consumes the streams):

- ``JOB_STREAMS``: one stream per kind of job, read by the consumer group ``GROUP``.
  A worker deletes an entry (XDEL) in the same atomic step that acknowledges it, so a
  job stream holds exactly the unfinished jobs: waiting plus in progress. Its length
  is the backlog, on Redis 6.2 too (whose XINFO GROUPS has no ``lag``).
- ``RETRY_KEY``: a sorted set of failed jobs waiting out their backoff (score: due
  time, unix ms); a worker moves them back to their stream when due.
- ``DEAD_STREAM``: jobs that failed ``job_max_attempts`` times or could not be read,
  each with its last error.
- ``OUTBOX_STREAM``: one entry per delivered email (the demo mailer's effect).
- ``DONE_KEY``: the idempotency record of a job, set in the same Lua script as its
  effect, so a job run twice has its effect once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

EMAIL_STREAM = "surgeguard:jobs:email"
ANALYTICS_STREAM = "surgeguard:jobs:analytics"
JOB_STREAMS: tuple[str, ...] = (EMAIL_STREAM, ANALYTICS_STREAM)
SIGNUP_KEY = "surgeguard:signup:{id}"

GROUP = "surgeguard-workers"
RETRY_KEY = "surgeguard:jobs:retry"
DEAD_STREAM = "surgeguard:jobs:dead"
OUTBOX_STREAM = "surgeguard:outbox"
ANALYTICS_COUNTS_KEY = "surgeguard:analytics:counts"
DONE_KEY = "surgeguard:done:{key}"
JOB_STATE_KEY = "surgeguard:job:{key}"  # status of a job that belongs to no signup


@dataclass(frozen=True)
class SignupStatus:
    id: str
    status: str  # queued | processing | done | dead
    attempts: int
    last_error: str | None
    created_at: float  # unix seconds


async def enqueue_signup(
    client: aioredis.Redis, email: str, name: str, *, now: float | None = None
) -> str:
    """Store a signup and its jobs in one transaction; returns the signup id."""
    [signup_id] = await enqueue_signups(client, [(email, name)], now=now)
    return signup_id


async def enqueue_signups(
    client: aioredis.Redis, people: Sequence[tuple[str, str]], *, now: float | None = None
) -> list[str]:
    """Store many signups (``(email, name)`` each) in one transaction; returns their ids.

    One round trip for all of them: the benchmark and tests seed backlogs with it."""
    created = time.time() if now is None else now
    ids = [uuid.uuid4().hex for _ in people]
    async with client.pipeline(transaction=True) as pipe:
        for signup_id, (email, name) in zip(ids, people, strict=True):
            pipe.hset(
                SIGNUP_KEY.format(id=signup_id),
                mapping={
                    "status": "queued",
                    "attempts": 0,
                    "email": email,
                    "name": name,
                    "created_at": created,
                },
            )
            # The idempotency key travels with the job so a retried job has its effect once.
            pipe.xadd(
                EMAIL_STREAM,
                {
                    "task": "welcome_email",
                    "signup_id": signup_id,
                    "email": email,
                    "name": name,
                    "idempotency_key": f"welcome_email:{signup_id}",
                },
            )
            pipe.xadd(
                ANALYTICS_STREAM,
                {
                    "task": "analytics",
                    "event": "signup",
                    "signup_id": signup_id,
                    "idempotency_key": f"analytics:{signup_id}",
                },
            )
        await pipe.execute()
    return ids


async def signup_status(client: aioredis.Redis, signup_id: str) -> SignupStatus | None:
    raw = await client.hgetall(SIGNUP_KEY.format(id=signup_id))
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return SignupStatus(
        id=signup_id,
        status=fields.get("status", "queued"),
        attempts=int(fields.get("attempts", "0")),
        last_error=fields.get("last_error") or None,
        created_at=float(fields.get("created_at", "0")),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
