"""Deferred work leaves the request path here: signups become jobs in Redis streams.

A signup is stored atomically (MULTI): its status hash, the welcome-email job and
the analytics event. ``202`` is only answered after Redis confirmed all three, so a
``202`` always means the job is durably queued; any Redis error becomes a ``503``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

EMAIL_STREAM = "surgeguard:jobs:email"
ANALYTICS_STREAM = "surgeguard:jobs:analytics"
JOB_STREAMS: tuple[str, ...] = (EMAIL_STREAM, ANALYTICS_STREAM)
SIGNUP_KEY = "surgeguard:signup:{id}"


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
    signup_id = uuid.uuid4().hex
    created = time.time() if now is None else now
    async with client.pipeline(transaction=True) as pipe:
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
    return signup_id


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


async def pending_jobs(client: aioredis.Redis) -> dict[str, int]:
    """Entries per stream not yet acknowledged by a worker (the backlog).

    With a consumer group this is its lag plus its pending count; before any worker
    created a group, it is the stream's length."""
    backlog: dict[str, int] = {}
    for stream in JOB_STREAMS:
        try:
            groups = await client.xinfo_groups(stream)
        except aioredis.ResponseError:  # no such stream yet
            backlog[stream] = 0
            continue
        if not groups:
            backlog[stream] = int(await client.xlen(stream))
            continue
        worst = 0
        for group in groups:
            lag = group.get("lag")
            if lag is None:  # Redis < 7 reports no lag: the stream length bounds it
                worst = max(worst, int(await client.xlen(stream)))
            else:
                worst = max(worst, int(group.get("pending", 0)) + int(lag))
        backlog[stream] = worst
    return backlog


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
