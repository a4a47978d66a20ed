"""Issue 4, the job store on a real Redis: each state change is one atomic script that
settles an entry at most once, and the effect happens at most once per job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_target_app.jobs.job import (
    DeadLetter,
    Effect,
    Entry,
    Job,
    RetryLater,
    Succeeded,
    parse_entry,
)
from surgeguard_target_app.jobs.store import JOB_STATE_TTL_S, JobStore
from surgeguard_target_app.jobs.streams import (
    ANALYTICS_COUNTS_KEY,
    ANALYTICS_STREAM,
    DEAD_STREAM,
    EMAIL_STREAM,
    GROUP,
    OUTBOX_STREAM,
    RETRY_KEY,
    SIGNUP_KEY,
    enqueue_signup,
)

Clean = redis.Redis


@pytest.fixture
async def client(redis_server: EmbeddedRedis, redis_client: Clean) -> AsyncIterator[aioredis.Redis]:
    """An async client on the session's Redis, flushed by ``redis_client``."""
    async_client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield async_client
    finally:
        await async_client.aclose()


@pytest.fixture
async def store(client: aioredis.Redis) -> JobStore:
    job_store = JobStore(client)
    await job_store.ensure_groups()
    return job_store


async def read_email(store: JobStore, consumer: str = "w1") -> list[Job]:
    entries = await store.read(consumer, 100, 100)
    return [parse_entry(e) for e in entries if e.stream == EMAIL_STREAM]


def outbox_effect(job: Job) -> Effect:
    return Effect("xadd", OUTBOX_STREAM, ("job", job.idempotency_key))


async def status(client: aioredis.Redis, signup_id: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = await client.hgetall(SIGNUP_KEY.format(id=signup_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_job_settled_twice_has_its_effect_once(
    client: aioredis.Redis, store: JobStore
) -> None:
    signup_id = await enqueue_signup(client, "ada@example.com", "Ada")
    [job] = await read_email(store)
    [began] = await store.begin([job])
    assert began.attempts == 1
    assert (await status(client, signup_id))["status"] == "processing"

    # Two workers finishing the same entry (a slow one and the one that reclaimed it):
    assert await store.settle([Succeeded(job, outbox_effect(job))]) == [1]
    assert await store.settle([Succeeded(job, outbox_effect(job))]) == [-2]
    assert await client.xlen(OUTBOX_STREAM) == 1
    assert (await status(client, signup_id))["status"] == "done"
    assert await client.xlen(EMAIL_STREAM) == 0  # settled entries leave the stream...
    assert (await store.sample()).pending[EMAIL_STREAM] == 0  # ...so the backlog is XLEN


async def test_a_second_entry_with_the_same_key_skips_the_effect(
    client: aioredis.Redis, store: JobStore
) -> None:
    fields = {"task": "welcome_email", "signup_id": "a" * 32, "email": "a@example.com",
              "idempotency_key": "welcome_email:" + "a" * 32}  # fmt: skip
    await client.xadd(EMAIL_STREAM, fields)  # type: ignore[arg-type]
    await client.xadd(EMAIL_STREAM, fields)  # type: ignore[arg-type]
    first, second = await read_email(store)
    assert [b.attempts for b in await store.begin([first])] == [1]
    assert await store.settle([Succeeded(first, outbox_effect(first))]) == [1]
    # The record is found before the second one even runs:
    assert [b.attempts for b in await store.begin([second])] == [-1]
    assert await store.settle([Succeeded(second, None)]) == [0]
    assert await client.xlen(OUTBOX_STREAM) == 1
    assert await client.xlen(EMAIL_STREAM) == 0


async def test_a_retry_waits_in_the_retry_set_then_returns_to_its_stream(
    client: aioredis.Redis, store: JobStore
) -> None:
    signup_id = await enqueue_signup(client, "ada@example.com", "Ada")
    [job] = await read_email(store)
    await store.begin([job])
    assert await store.settle([RetryLater(job, 60_000, "MailerError: nope")]) == [1]
    assert await client.xlen(EMAIL_STREAM) == 0
    assert await client.zcard(RETRY_KEY) == 1
    state = await status(client, signup_id)
    assert state["status"] == "queued" and state["last_error"] == "MailerError: nope"
    assert await store.promote_due() == 0  # not due for a minute

    await client.zadd(RETRY_KEY, {m: 0 for m in await client.zrange(RETRY_KEY, 0, -1)})
    assert await store.promote_due() == 1
    [again] = await read_email(store)
    assert again.entry_id != job.entry_id and dict(again.fields) == dict(job.fields)
    [began] = await store.begin([again])
    assert began.attempts == 2 and began.last_error == "MailerError: nope"


async def test_a_dead_letter_keeps_the_last_error_and_the_original_fields(
    client: aioredis.Redis, store: JobStore
) -> None:
    signup_id = await enqueue_signup(client, "ada@example.com", "Ada")
    [job] = await read_email(store)
    await store.begin([job])
    entry = Entry(job.stream, job.entry_id, {})
    assert await store.settle([DeadLetter(entry, job, "MailerError: bounced", 5)]) == [1]
    [(_, letter)] = await client.xrange(DEAD_STREAM)
    assert letter[b"error"] == b"MailerError: bounced"
    assert letter[b"attempts"] == b"5"
    assert letter[b"signup_id"] == signup_id.encode()
    assert letter[b"entry_id"] == job.entry_id.encode()
    state = await status(client, signup_id)
    assert (state["status"], state["attempts"], state["last_error"]) == (
        "dead", "5", "MailerError: bounced")  # fmt: skip
    assert await client.xlen(EMAIL_STREAM) == 0


async def test_hand_back_leaves_the_entry_pending_and_due_for_reclaim(
    client: aioredis.Redis, store: JobStore
) -> None:
    signup_id = await enqueue_signup(client, "ada@example.com", "Ada")
    [job] = await read_email(store, "leaving")
    await store.begin([job])
    await store.hand_back("leaving", [(Entry(job.stream, job.entry_id, {}), job, True)], 60_000)
    state = await status(client, signup_id)
    assert (state["status"], state["attempts"]) == ("queued", "0")  # interrupted, not failed
    [pending] = await client.xpending_range(EMAIL_STREAM, GROUP, "-", "+", 10)
    assert pending["time_since_delivered"] >= 60_000

    reclaimed = await store.reclaim("next", 60_000, 10)
    assert [e.entry_id for e in reclaimed if e.stream == EMAIL_STREAM] == [job.entry_id]


async def test_scripts_are_loaded_again_after_redis_forgot_them(
    client: aioredis.Redis, store: JobStore
) -> None:
    await enqueue_signup(client, "ada@example.com", "Ada")
    [job] = await read_email(store)
    await store.begin([job])
    await client.script_flush()  # what a Redis restart does to the script cache
    assert await store.settle([Succeeded(job, outbox_effect(job))]) == [1]


async def test_sample_reports_backlog_lag_retries_and_dead_letters(
    client: aioredis.Redis, store: JobStore
) -> None:
    old_ms = int(time.time() * 1000) - 5_000
    await client.xadd(ANALYTICS_STREAM, {"task": "analytics"}, id=f"{old_ms}-0")
    await enqueue_signup(client, "ada@example.com", "Ada")
    await client.zadd(RETRY_KEY, {"x": 1})
    await client.xadd(DEAD_STREAM, {"error": "e"})
    sample = await store.sample()
    assert sample.pending == {EMAIL_STREAM: 1, ANALYTICS_STREAM: 2}
    assert 4.5 < sample.oldest_age_s[ANALYTICS_STREAM] < 60
    assert sample.oldest_age_s[EMAIL_STREAM] < 4.5
    assert (sample.retry_scheduled, sample.dead_letters) == (1, 1)


async def test_forget_consumer_only_when_it_holds_nothing(
    client: aioredis.Redis, store: JobStore
) -> None:
    await client.xadd(
        EMAIL_STREAM,
        {
            "task": "welcome_email",
            "signup_id": "b" * 32,
            "email": "b@example.com",
            "idempotency_key": "k",
        },
    )
    [job] = await read_email(store, "holder")
    assert not await store.forget_consumer("holder")  # would drop its pending entries
    await store.begin([job])
    await store.settle([Succeeded(job, outbox_effect(job))])
    assert await store.forget_consumer("holder")
    consumers: list[dict[str, Any]] = await client.xinfo_consumers(EMAIL_STREAM, GROUP)
    assert b"holder" not in {c["name"] for c in consumers}


async def test_a_signup_keeps_its_ttl_through_its_job_and_a_lost_one_gets_one(
    client: aioredis.Redis, store: JobStore
) -> None:
    """Issue 13, retention: the worker never makes a signup's hash live forever."""
    kept = await enqueue_signup(client, "ada@example.com", "Ada")
    await client.expire(SIGNUP_KEY.format(id=kept), 100)
    # A signup whose hash expired while its job waited: the job brings it back bounded.
    lost = await enqueue_signup(client, "bob@example.com", "Bob")
    await client.delete(SIGNUP_KEY.format(id=lost))
    jobs = await read_email(store)
    await store.begin(jobs)
    assert 0 < await client.ttl(SIGNUP_KEY.format(id=kept)) <= 100  # not reset to a week
    assert 0 < await client.ttl(SIGNUP_KEY.format(id=lost)) <= JOB_STATE_TTL_S


async def test_the_analytics_counts_hold_a_bounded_number_of_names(
    client: aioredis.Redis,
) -> None:
    """Issue 13, retention: event names are the client's; the counts hash is bounded."""
    store = JobStore(client, streams=(ANALYTICS_STREAM,), counter_fields_max=2)
    await store.ensure_groups()
    for n, event in enumerate(["a", "b", "c", "d", "a"]):
        await client.xadd(
            ANALYTICS_STREAM,
            {"task": "analytics", "event": event, "idempotency_key": f"analytics:{n}"},
        )
    jobs = [parse_entry(e) for e in await store.read("w1", 100, 100)]
    await store.begin(jobs)
    effects = [Effect("hincrby", ANALYTICS_COUNTS_KEY, (j.fields["event"], "1")) for j in jobs]
    assert (
        await store.settle([Succeeded(j, e) for j, e in zip(jobs, effects, strict=True)]) == [1] * 5
    )
    counts = await client.hgetall(ANALYTICS_COUNTS_KEY)
    assert counts == {b"a": b"2", b"b": b"1", b"other": b"2"}
