"""Deferred work leaves the request path here: signups become jobs in Redis streams.

A signup is stored atomically (one Lua script, or MULTI for a batch): its status hash,
the welcome-email job, the analytics event and, when the client sent an
``Idempotency-Key``, the key's record. ``202`` is only answered after Redis confirmed
all of it, so a ``202`` means the job is in Redis's append-only file: it survives Redis
being killed; whether it also survives a machine crash depends on the Redis's
``appendfsync`` (``everysec``: up to about a second may be lost; ``always``: nothing).
Any Redis error becomes a ``503``.

A retried signup is the same signup: the key's record (per client, for
``idempotency_window_s``) names the signup its first attempt stored, so a retry after a
503 or a timeout whose write had landed gets that signup back and no second email.

Retention: a signup's status hash expires after ``signup_ttl_s``; the analytics stream,
the outbox and the dead letters are trimmed to about their MAXLEN (oldest first); the
analytics counts hold at most ``COUNTER_FIELDS_MAX`` event names (later ones count
under ``other``). The
email stream is never trimmed (those are jobs not done yet); job idempotency records
expire (``jobs.store.DONE_TTL_S``). The control plane's keys have no TTL, and Redis must
not evict (``maxmemory-policy noeviction``): see ``surgeguard.runtime.embedded_redis``.

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

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from surgeguard_target_app.jobs.scripts import SIGNUP

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
# An Idempotency-Key's record, per client (a digest of its client key): "<signup id> <body>".
SIGNUP_REQUEST_KEY = "surgeguard:signup-request:{client}:{key}"

# Retention defaults (the demo's settings override them).
SIGNUP_TTL_S = 7 * 24 * 3600  # a signup's status hash, seconds
IDEMPOTENCY_WINDOW_S = 24 * 3600  # how long an Idempotency-Key names its signup, seconds
ANALYTICS_MAXLEN = 100_000  # analytics events kept waiting (entries, approximately)
OUTBOX_MAXLEN = 100_000  # delivered emails kept in the outbox (entries, approximately)
DEAD_LETTERS_MAXLEN = 10_000  # dead letters kept (entries, approximately)
COUNTER_FIELDS_MAX = 10_000  # event names the analytics counts hold; later ones: "other"


@dataclass(frozen=True)
class Retention:
    """How long a signup's traces stay: ``signup_ttl_s`` and ``idempotency_window_s`` in
    seconds, ``analytics_maxlen`` in stream entries (trimmed approximately)."""

    signup_ttl_s: int = SIGNUP_TTL_S
    idempotency_window_s: int = IDEMPOTENCY_WINDOW_S
    analytics_maxlen: int = ANALYTICS_MAXLEN


@dataclass(frozen=True)
class Stored:
    """What ``store_signup`` did: ``replayed`` when the key's earlier signup came back
    (nothing new stored); ``conflict`` when the key was used for a different body
    (``id`` is then that other signup's, nothing stored)."""

    id: str
    replayed: bool = False
    conflict: bool = False


@dataclass(frozen=True)
class SignupStatus:
    id: str
    status: str  # queued | processing | done | dead
    attempts: int
    last_error: str | None
    created_at: float  # unix seconds


async def store_signup(
    client: aioredis.Redis,
    email: str,
    name: str,
    *,
    idempotency_key: str | None = None,
    client_key: str = "",
    retention: Retention = Retention(),
    now: float | None = None,
) -> Stored:
    """Store a signup, its jobs and its key's record in one atomic step (a Lua script).

    With ``idempotency_key`` (scoped to ``client_key``: two clients' keys never meet),
    a key seen within ``retention.idempotency_window_s`` returns its first signup."""
    signup_id = uuid.uuid4().hex
    record = ""
    if idempotency_key is not None:
        scope = hashlib.sha256(client_key.encode()).hexdigest()[:16]
        record = SIGNUP_REQUEST_KEY.format(client=scope, key=idempotency_key)
    body = hashlib.sha256(f"{email}\0{name}".encode()).hexdigest()[:32]
    keys = (record, SIGNUP_KEY.format(id=signup_id), EMAIL_STREAM, ANALYTICS_STREAM)
    args = (
        signup_id,
        email,
        name,
        repr(time.time() if now is None else now),
        body,
        retention.idempotency_window_s,
        retention.signup_ttl_s,
        retention.analytics_maxlen,
    )
    try:
        reply = await client.evalsha(SIGNUP.sha, len(keys), *keys, *args)
    except NoScriptError:  # first use, or Redis restarted: EVAL also loads it
        reply = await client.eval(SIGNUP.source, len(keys), *keys, *args)
    outcome, stored_id = int(reply[0]), _text(reply[1])
    return Stored(stored_id, replayed=outcome == 0, conflict=outcome == -1)


async def enqueue_signup(
    client: aioredis.Redis, email: str, name: str, *, now: float | None = None
) -> str:
    """Store a signup and its jobs in one atomic step; returns the signup id."""
    return (await store_signup(client, email, name, now=now)).id


async def enqueue_signups(
    client: aioredis.Redis,
    people: Sequence[tuple[str, str]],
    *,
    now: float | None = None,
    retention: Retention = Retention(),
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
            pipe.expire(SIGNUP_KEY.format(id=signup_id), retention.signup_ttl_s)
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
                maxlen=retention.analytics_maxlen,
                approximate=True,
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
