"""What a job is: a stream entry read into a typed ``Job``, and what became of it.

Pure: no Redis, no clock. ``jobs.streams`` writes well-formed entries, but a stream
takes anything anyone writes, so every field is checked; an entry that cannot be a job
raises ``MalformedJob`` naming what is wrong, and goes to the dead letters instead of
crashing a worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from surgeguard_target_app.jobs.streams import DONE_KEY, JOB_STATE_KEY, SIGNUP_KEY

# The fields each task needs besides ``task`` and ``idempotency_key``.
TASK_FIELDS: Mapping[str, tuple[str, ...]] = {
    "welcome_email": ("signup_id", "email"),
    "analytics": ("event",),
}
MAX_FIELD_CHARS = 1_000  # a hand-written entry must not smuggle megabytes into keys
SIGNUP_ID = re.compile(r"^[0-9a-f]{32}$")


class MalformedJob(ValueError):
    """The entry cannot be run; the message says which field is wrong and why."""


@dataclass(frozen=True)
class Entry:
    """A stream entry as read: where it is and its raw fields."""

    stream: str
    entry_id: str
    fields: Mapping[bytes, bytes]

    @property
    def key(self) -> tuple[str, str]:
        return self.stream, self.entry_id

    def text_fields(self) -> dict[str, str]:
        """The fields as text (bad UTF-8 replaced), for dead letters and logs."""
        return {
            k.decode(errors="replace"): v.decode(errors="replace") for k, v in self.fields.items()
        }


@dataclass(frozen=True, eq=False)
class Job:
    """A runnable job read from ``stream`` at ``entry_id``."""

    stream: str
    entry_id: str
    task: str
    idempotency_key: str
    fields: Mapping[str, str]

    @property
    def key(self) -> tuple[str, str]:
        return self.stream, self.entry_id

    @property
    def signup_id(self) -> str | None:
        return self.fields.get("signup_id")

    @property
    def done_key(self) -> str:
        """The job's idempotency record: set, with its effect, exactly once."""
        return DONE_KEY.format(key=self.idempotency_key)

    @property
    def status_key(self) -> str:
        """The hash that reports status, attempts and last error.

        A welcome email reports on its signup (``GET /signups/{id}``); other jobs
        (analytics) on a hash of their own."""
        if self.task == "welcome_email" and self.signup_id is not None:
            return SIGNUP_KEY.format(id=self.signup_id)
        return JOB_STATE_KEY.format(key=self.idempotency_key)


def malformed_done_key(entry: Entry) -> str:
    """Idempotency record for an entry that is no job: its position is its identity."""
    return DONE_KEY.format(key=f"malformed:{entry.stream}:{entry.entry_id}")


def parse_entry(entry: Entry, tasks: Mapping[str, tuple[str, ...]] = TASK_FIELDS) -> Job:
    """The job in ``entry``; raises ``MalformedJob`` naming the first problem found."""
    fields: dict[str, str] = {}
    for raw_name, raw_value in entry.fields.items():
        try:
            name, value = raw_name.decode(), raw_value.decode()
        except UnicodeDecodeError:
            raise MalformedJob(f"field {raw_name!r} is not UTF-8 text") from None
        if len(value) > MAX_FIELD_CHARS:
            raise MalformedJob(
                f"field {name!r} is {len(value)} characters long (at most {MAX_FIELD_CHARS})"
            )
        fields[name] = value
    task = fields.get("task")
    if not task:
        raise MalformedJob("missing field 'task'")
    if task not in tasks:
        raise MalformedJob(f"unknown task {task!r} (known: {', '.join(sorted(tasks))})")
    for name in ("idempotency_key", *tasks[task]):
        if not fields.get(name):
            raise MalformedJob(f"task {task!r} needs field {name!r}, missing or empty")
    signup_id = fields.get("signup_id")
    if signup_id is not None and not SIGNUP_ID.match(signup_id):
        raise MalformedJob(f"field 'signup_id' must be 32 hex digits, got {signup_id!r}")
    return Job(entry.stream, entry.entry_id, task, fields["idempotency_key"], fields)


# -- what became of a job -------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """What a finished job changes in Redis, applied in one atomic step with its record.

    ``xadd``: append ``args`` (field, value, ...) to the stream ``key``;
    ``hincrby``: add ``args[1]`` to field ``args[0]`` of the hash ``key``."""

    kind: Literal["xadd", "hincrby"]
    key: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Succeeded:
    """The job ran; apply ``effect`` unless the job's record says it already happened.

    ``effect`` is None when the record was found before running (a duplicate)."""

    job: Job
    effect: Effect | None

    @property
    def key(self) -> tuple[str, str]:
        return self.job.key


@dataclass(frozen=True)
class RetryLater:
    """The attempt failed with ``error``; run the job again after ``delay_ms``."""

    job: Job
    delay_ms: int
    error: str

    @property
    def key(self) -> tuple[str, str]:
        return self.job.key


@dataclass(frozen=True)
class DeadLetter:
    """Give up: move the entry to the dead letters with ``error``.

    ``job`` is None for an entry that is no job. ``report`` says whether the job's
    status hash gets the verdict (not when writing that hash is what failed)."""

    entry: Entry
    job: Job | None
    error: str
    attempts: int
    report: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.entry.key

    @property
    def task(self) -> str:
        return self.job.task if self.job is not None else "malformed"


Outcome = Succeeded | RetryLater | DeadLetter
