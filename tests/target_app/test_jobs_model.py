"""Issue 4, the pure parts: reading an entry into a job, the retry policy, the demo
mailer, and the worker's configuration. No Redis, no sleeping."""

from __future__ import annotations

import random

import pytest

from surgeguard.settings import SettingsError
from surgeguard_target_app.jobs.job import Effect, Entry, MalformedJob, parse_entry
from surgeguard_target_app.jobs.streams import JOB_STATE_KEY, OUTBOX_STREAM, SIGNUP_KEY
from surgeguard_target_app.settings import WorkerSettings
from surgeguard_target_app.worker.mailer import Mailer, MailerError
from surgeguard_target_app.worker.retry_policy import RetryPolicy
from surgeguard_target_app.worker.server import worker_config
from surgeguard_target_app.worker.tasks import count_event
from surgeguard_target_app.worker.worker import WorkerConfig

SIGNUP_ID = "0123456789abcdef0123456789abcdef"
EMAIL_FIELDS = {
    b"task": b"welcome_email",
    b"signup_id": SIGNUP_ID.encode(),
    b"email": b"ada@example.com",
    b"name": b"Ada",
    b"idempotency_key": f"welcome_email:{SIGNUP_ID}".encode(),
}


def entry(fields: dict[bytes, bytes]) -> Entry:
    return Entry("surgeguard:jobs:email", "1-0", fields)


# -- parsing ----------------------------------------------------------------------------


def test_a_welcome_email_entry_is_a_job_that_reports_on_its_signup() -> None:
    job = parse_entry(entry(EMAIL_FIELDS))
    assert job.task == "welcome_email"
    assert job.idempotency_key == f"welcome_email:{SIGNUP_ID}"
    assert job.signup_id == SIGNUP_ID
    assert job.status_key == SIGNUP_KEY.format(id=SIGNUP_ID)
    assert job.done_key == f"surgeguard:done:welcome_email:{SIGNUP_ID}"
    assert job.key == ("surgeguard:jobs:email", "1-0")


def test_an_analytics_job_reports_on_a_hash_of_its_own() -> None:
    job = parse_entry(
        entry({b"task": b"analytics", b"event": b"signup", b"idempotency_key": b"analytics:k"})
    )
    assert job.status_key == JOB_STATE_KEY.format(key="analytics:k")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({b"foo": b"bar"}, "missing field 'task'"),
        ({**EMAIL_FIELDS, b"task": b"launch_rockets"}, "unknown task 'launch_rockets'"),
        ({k: v for k, v in EMAIL_FIELDS.items() if k != b"email"}, "needs field 'email'"),
        ({**EMAIL_FIELDS, b"idempotency_key": b""}, "needs field 'idempotency_key'"),
        ({**EMAIL_FIELDS, b"signup_id": b"../etc"}, "'signup_id' must be 32 hex digits"),
        ({**EMAIL_FIELDS, b"email": b"\xff\xfe"}, "field b'email' is not UTF-8"),
        ({**EMAIL_FIELDS, b"name": b"x" * 5000}, "'name' is 5000 characters long"),
    ],
)
def test_a_malformed_entry_says_what_is_wrong(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(MalformedJob, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_entry(entry(fields))


# -- retry policy -----------------------------------------------------------------------


def test_backoff_doubles_within_its_jitter_band_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=0.2, cap_s=1.0)
    assert policy.delay_s(1, 0.0) == pytest.approx(0.1)
    assert policy.delay_s(1, 0.999) == pytest.approx(0.1999)
    assert policy.delay_s(2, 0.5) == pytest.approx(0.3)
    assert policy.delay_s(3, 0.0) == pytest.approx(0.4)
    assert policy.delay_s(10, 0.0) == pytest.approx(0.5)  # capped: [cap/2, cap]
    assert policy.delay_s(10_000, 0.999) <= 1.0  # no overflow for huge attempt counts


def test_policy_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"base_s": 0.0}, "base_s must be > 0 seconds"),
        ({"base_s": 2.0, "cap_s": 1.0}, r"cap_s \(1.0 s\) must be >= base_s"),
    ],
)
def test_policy_rejects_bad_values_naming_the_range(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_delay_rejects_a_draw_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"draw must be in \[0, 1\), got 1.0"):
        RetryPolicy().delay_s(1, 1.0)


# -- the mailer -------------------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_mailer_takes_its_latency_and_returns_one_outbox_entry() -> None:
    sleeps = Sleeps()
    mailer = Mailer(latency_s=0.005, sender="w1", sleep=sleeps)
    effect = await mailer.send(parse_entry(entry(EMAIL_FIELDS)))
    assert sleeps.calls == [0.005]
    assert effect.kind == "xadd" and effect.key == OUTBOX_STREAM
    fields = dict(zip(effect.args[::2], effect.args[1::2], strict=True))
    assert fields == {
        "job": f"welcome_email:{SIGNUP_ID}",
        "entry_id": "1-0",
        "signup_id": SIGNUP_ID,
        "address": "ada@example.com",
        "worker": "w1",
    }


async def test_mailer_fails_poison_addresses_always_and_others_at_its_rate() -> None:
    poisoned = Mailer(latency_s=0, poison=r"@bounce\.example$")
    bad = parse_entry(entry({**EMAIL_FIELDS, b"email": b"x@bounce.example"}))
    with pytest.raises(MailerError, match="matches the poison pattern"):
        await poisoned.send(bad)
    await poisoned.send(parse_entry(entry(EMAIL_FIELDS)))  # others go through

    flaky = Mailer(latency_s=0, failure_rate=0.5, rng=random.Random(7))
    outcomes = []
    for _ in range(200):
        try:
            await flaky.send(parse_entry(entry(EMAIL_FIELDS)))
            outcomes.append(True)
        except MailerError:
            outcomes.append(False)
    assert 60 < outcomes.count(False) < 140


def test_mailer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_rate must be in"):
        Mailer(failure_rate=1.5)
    with pytest.raises(ValueError, match="is not a regular expression"):
        Mailer(poison="([")


async def test_an_analytics_event_counts_one() -> None:
    job = parse_entry(
        entry({b"task": b"analytics", b"event": b"signup", b"idempotency_key": b"analytics:k"})
    )
    assert await count_event(job) == Effect(
        "hincrby", "surgeguard:analytics:counts", ("signup", "1")
    )


# -- configuration ----------------------------------------------------------------------


def test_reclaim_idle_must_exceed_the_job_timeout() -> None:
    with pytest.raises(ValueError, match=r"reclaim idle \(500 ms\) must exceed the job timeout"):
        WorkerConfig("w", job_timeout_s=1.0, reclaim_idle_ms=500)
    settings = WorkerSettings.load(job_timeout_ms=1000, job_reclaim_idle_ms=500)
    with pytest.raises(SettingsError, match="SURGEGUARD_JOB_RECLAIM_IDLE_MS"):
        worker_config(settings)


def test_backoff_max_below_base_is_refused_naming_both() -> None:
    settings = WorkerSettings.load(job_backoff_base_ms=500, job_backoff_max_ms=100)
    with pytest.raises(SettingsError, match=r"BACKOFF_MAX_MS \(100\) must be >= .*BASE_MS \(500\)"):
        worker_config(settings)


def test_worker_config_from_settings() -> None:
    settings = WorkerSettings.load(
        worker_concurrency=7, job_max_attempts=3, job_backoff_base_ms=50, worker_id="w9"
    )
    config = worker_config(settings)
    assert config.consumer == "w9"
    assert config.concurrency == 7 and config.capacity == 14
    assert config.policy == RetryPolicy(max_attempts=3, base_s=0.05, cap_s=60.0)
