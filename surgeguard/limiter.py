"""The limiter: counts requests in flight, hands out slots, keeps a bounded wait queue.

It enforces numbers; it never decides them. Whoever owns the limit (an operator,
the controller, a test) calls ``set_limits``; raising a limit wakes waiters at once,
lowering one never cancels work already in flight.

Everything runs on one asyncio event loop, so the counters need no locks and a
``stats()`` snapshot is a handful of attribute reads.

Rules when saturated (no free slot):
- a request waits in a queue of at most ``queue_limit`` entries, for at most
  ``queue_timeout`` seconds (then ``queue_timeout``);
- sheddable requests may only fill ``sheddable_queue_share`` of the queue (then
  ``priority``); a full queue rejects with ``queue_full`` unless the arrival is more
  important than someone waiting: then the newest least important waiter is
  displaced (it gets ``priority``) and the arrival takes its place;
- a client key that already holds ``client_share`` of the limit (in flight plus
  waiting) is turned away (``client_share``), so one noisy client cannot starve
  the rest.
Waiters are served most important first, first come first served within a class.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from surgeguard.priority import Priority
from surgeguard.reasons import (
    CLIENT_SHARE,
    DISCONNECTED,
    LIMITER_REASONS,
    PRIORITY,
    QUEUE_FULL,
    QUEUE_TIMEOUT,
)

_PRIORITIES = tuple(Priority)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# ``call_later(delay_s, callback, arg)``: asyncio's by default; tests pass a fake timer.
CallLater = Callable[[float, Callable[[Any], None], Any], Cancellable]


class Waiter:
    """One request waiting for a slot. ``future`` resolves to None (slot held) or a reason.

    ``pending`` and ``result`` are the limiter's own record of the wait, apart from the
    future: a task cancelled while waiting cancels the future too, and the waiter must
    still leave the queue (and give back its client's hold) afterwards."""

    __slots__ = ("client", "enqueued_at", "future", "pending", "priority", "result", "timer")

    def __init__(
        self,
        priority: Priority,
        client: bytes | None,
        enqueued_at: float,
        future: asyncio.Future[str | None],
    ) -> None:
        self.priority = priority
        self.client = client
        self.enqueued_at = enqueued_at
        self.future = future
        self.timer: Cancellable | None = None
        self.pending = True  # still counted in ``waiting``
        self.result: str | None = None  # once not pending: None (slot granted) or a reason


@dataclass(frozen=True)
class LimiterStats:
    """A snapshot. Counts are totals since start (requests)."""

    limit: int
    queue_limit: int
    queue_timeout_s: float
    in_flight: int
    waiting: int
    waiting_by_priority: dict[str, int]
    peak_in_flight: int
    admitted: int
    admitted_after_wait: int
    rejected: dict[str, int]
    disconnected: int


class Limiter:
    def __init__(
        self,
        limit: int,
        queue_limit: int,
        queue_timeout_s: float,
        *,
        client_share: float = 0.5,
        sheddable_queue_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        if not 0.0 < client_share <= 1.0:
            raise ValueError(f"client_share must be in (0, 1], got {client_share}")
        if not 0.0 <= sheddable_queue_share <= 1.0:
            raise ValueError(
                f"sheddable_queue_share must be in [0, 1], got {sheddable_queue_share}"
            )
        self._clock = clock
        self._call_later = call_later
        self.client_share = client_share
        self.sheddable_queue_share = sheddable_queue_share
        self.limit = 1
        self.queue_limit = 0
        self.queue_timeout_s = 0.0
        self.in_flight = 0
        self.waiting = 0
        self.peak_in_flight = 0  # highest in flight in the current peak window
        self._previous_peak = 0
        self._peak_window_start = clock()
        self._queues: tuple[deque[Waiter], ...] = tuple(deque() for _ in _PRIORITIES)
        self._held: dict[bytes, int] = {}  # client -> in flight + waiting
        self._client_cap = 1
        self._sheddable_room = 0
        self.admitted = 0
        self.admitted_after_wait = 0
        self.disconnected = 0
        self.rejected: dict[str, int] = dict.fromkeys(LIMITER_REASONS, 0)
        self.set_limits(limit=limit, queue_limit=queue_limit, queue_timeout_s=queue_timeout_s)

    # -- limits -------------------------------------------------------------------------

    def set_limits(
        self,
        *,
        limit: int | None = None,
        queue_limit: int | None = None,
        queue_timeout_s: float | None = None,
    ) -> None:
        """Change limits now. Validates all before changing any."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if queue_limit is not None and queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {queue_limit}")
        if queue_timeout_s is not None and queue_timeout_s <= 0:
            raise ValueError(f"queue_timeout_s must be > 0, got {queue_timeout_s}")
        if limit is not None:
            self.limit = limit
            self._client_cap = max(1, int(limit * self.client_share))
        if queue_limit is not None:
            self.queue_limit = queue_limit
            self._sheddable_room = int(queue_limit * self.sheddable_queue_share)
        if queue_timeout_s is not None:
            # Applies to arrivals from now on; current waiters keep their deadline.
            self.queue_timeout_s = queue_timeout_s
        self._wake()

    # -- the hot path -------------------------------------------------------------------

    def try_acquire(self, priority: Priority, client: bytes | None) -> Waiter | str | None:
        """Take a slot if one is free (returns None), else queue (returns a ``Waiter``)
        or reject (returns the reason). Never awaits."""
        if self.in_flight < self.limit and not self.waiting:
            self._take(client)
            return None
        return self._enqueue(priority, client)

    def release(self, client: bytes | None) -> None:
        """Give back a slot taken by ``try_acquire`` or a successful wait."""
        self.in_flight -= 1
        if client is not None:
            self._drop_hold(client)
        if self.waiting:
            self._wake()

    def _take(self, client: bytes | None) -> None:
        self.in_flight += 1
        self.admitted += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        if client is not None:
            held = self._held
            held[client] = held.get(client, 0) + 1

    def _drop_hold(self, client: bytes) -> None:
        held = self._held
        n = held.get(client, 0) - 1
        if n > 0:
            held[client] = n
        else:
            held.pop(client, None)

    # -- the queue ----------------------------------------------------------------------

    def _reject(self, reason: str) -> str:
        self.rejected[reason] += 1
        return reason

    def _enqueue(self, priority: Priority, client: bytes | None) -> Waiter | str:
        if (
            client is not None
            and self.client_share < 1.0  # 1.0: no per-client cap at all
            and self._held.get(client, 0) >= self._client_cap
        ):
            return self._reject(CLIENT_SHARE)
        if priority is Priority.SHEDDABLE and self.waiting >= self._sheddable_room:
            return self._reject(PRIORITY if self.queue_limit else QUEUE_FULL)
        if self.waiting >= self.queue_limit and not self._displace_less_important(priority):
            return self._reject(QUEUE_FULL)
        if not self.waiting:
            # Drop resolved waiters left over from the last burst (they are skipped lazily).
            for queue in self._queues:
                queue.clear()
        loop = asyncio.get_running_loop()
        waiter = Waiter(priority, client, self._clock(), loop.create_future())
        call_later = self._call_later or loop.call_later
        waiter.timer = call_later(self.queue_timeout_s, self._expire, waiter)
        self._queues[priority].append(waiter)
        self.waiting += 1
        if client is not None:
            self._held[client] = self._held.get(client, 0) + 1
        return waiter

    def _displace_less_important(self, priority: Priority) -> bool:
        """Evict the newest waiter of the least important class below ``priority``."""
        for victim_class in reversed(_PRIORITIES):
            if victim_class <= priority:
                return False
            queue = self._queues[victim_class]
            while queue:
                victim = queue.pop()
                if victim.pending:
                    self._finish_waiter(victim, PRIORITY)
                    self.rejected[PRIORITY] += 1
                    return True
        return False

    def _finish_waiter(self, waiter: Waiter, result: str | None) -> None:
        """Take ``waiter`` out of the count and resolve it (it may still sit in a deque;
        finished waiters are skipped when popped)."""
        self.waiting -= 1
        waiter.pending = False
        waiter.result = result
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if waiter.client is not None and result is not None:
            self._drop_hold(waiter.client)
        if not waiter.future.done():  # a cancelled wait cancelled its future
            waiter.future.set_result(result)

    def _wake(self) -> None:
        """Hand free slots to waiters, most important first. The slot is taken on the
        waiter's behalf here, so no arrival can steal it before the waiter runs."""
        for queue in self._queues:
            while queue and self.in_flight < self.limit:
                waiter = queue.popleft()
                if not waiter.pending:
                    continue
                self._finish_waiter(waiter, None)
                self.in_flight += 1
                self.admitted += 1
                self.admitted_after_wait += 1
                if self.in_flight > self.peak_in_flight:
                    self.peak_in_flight = self.in_flight
            if self.in_flight >= self.limit:
                return

    def _expire(self, waiter: Waiter) -> None:
        if waiter.pending:
            waiter.timer = None
            self._finish_waiter(waiter, QUEUE_TIMEOUT)
            self.rejected[QUEUE_TIMEOUT] += 1

    async def wait(self, waiter: Waiter) -> str | None:
        """Wait for a slot: None once it is held, else the rejection reason.
        If the waiting task is cancelled, the waiter leaves the queue (or gives the slot
        back if it had just been granted)."""
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self.abandon(waiter)
            raise

    def abandon(self, waiter: Waiter, *, disconnected: bool = True) -> None:
        """The request behind ``waiter`` went away (client disconnected, task cancelled,
        or refused by the door while waiting: ``disconnected=False`` then). It leaves the
        queue, or gives back the slot it was just granted; once only, however often
        this is called."""
        if waiter.pending:
            self._finish_waiter(waiter, DISCONNECTED)
            if disconnected:
                self.disconnected += 1
        elif waiter.result is None:
            waiter.result = DISCONNECTED  # the slot goes back once
            self.release(waiter.client)

    # -- observation --------------------------------------------------------------------

    def recent_peak(self, window_s: float = 1.0) -> int:
        """Highest in-flight count over the last one to two windows (requests).

        Rotation happens here, when someone reads, so the hot path never reads a clock;
        every reader sees the same windows, however many there are."""
        now = self._clock()
        elapsed = now - self._peak_window_start
        if elapsed >= window_s:
            # A window with no reader in between: its peak is unknown, assume "now".
            self._previous_peak = self.in_flight if elapsed >= 2 * window_s else self.peak_in_flight
            self.peak_in_flight = self.in_flight
            self._peak_window_start = now
        return max(self._previous_peak, self.peak_in_flight)

    def stats(self) -> LimiterStats:
        return LimiterStats(
            limit=self.limit,
            queue_limit=self.queue_limit,
            queue_timeout_s=self.queue_timeout_s,
            in_flight=self.in_flight,
            waiting=self.waiting,
            waiting_by_priority={
                p.label: sum(1 for w in self._queues[p] if w.pending) for p in _PRIORITIES
            },
            peak_in_flight=self.peak_in_flight,
            admitted=self.admitted,
            admitted_after_wait=self.admitted_after_wait,
            rejected=dict(self.rejected),
            disconnected=self.disconnected,
        )
