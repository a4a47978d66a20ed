"""The demo mailer: "sends" a welcome email and says what delivering it changes.

A send takes ``latency_s`` and fails at ``failure_rate``, so drills can make it slow or
flaky; addresses matching ``poison`` always fail (a mailbox that bounces everything).
The delivery itself is an ``Effect``: one entry in the ``surgeguard:outbox`` stream,
which the worker applies in one atomic step with the job's idempotency record, so the
outbox holds each delivered email exactly once and anyone can count them.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable

from surgeguard_target_app.jobs.job import Effect, Job
from surgeguard_target_app.jobs.streams import OUTBOX_STREAM


class MailerError(Exception):
    """A send failed; the job will be retried (or given up on)."""


class Mailer:
    def __init__(
        self,
        *,
        latency_s: float = 0.005,
        failure_rate: float = 0.0,
        poison: str = "",
        sender: str = "worker",
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``latency_s`` in seconds, ``failure_rate`` in [0, 1], ``poison`` a regular
        expression (empty: none); ``sender`` names the worker in each outbox entry."""
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0 seconds, got {latency_s}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate}")
        try:
            self._poison = re.compile(poison) if poison else None
        except re.error as exc:
            raise ValueError(
                f"poison pattern {poison!r} is not a regular expression: {exc}"
            ) from None
        self._latency_s = latency_s
        self._failure_rate = failure_rate
        self._sender = sender
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def send(self, job: Job) -> Effect:
        """Send the welcome email of ``job``; raises ``MailerError`` when it fails."""
        address = job.fields["email"]
        if self._latency_s > 0:
            await self._sleep(self._latency_s)
        if self._poison is not None and self._poison.search(address):
            raise MailerError(
                f"mailbox {address} rejected the message (matches the poison pattern "
                f"{self._poison.pattern!r})"
            )
        if self._failure_rate and self._rng.random() < self._failure_rate:
            raise MailerError(f"send failed (simulated failure rate {self._failure_rate:g})")
        return Effect(
            "xadd",
            OUTBOX_STREAM,
            (
                "job",
                job.idempotency_key,
                "entry_id",
                job.entry_id,
                "signup_id",
                job.signup_id or "",
                "address",
                address,
                "worker",
                self._sender,
            ),
        )
