"""The limiter never leaks a place or a hold (issue 13), deterministically: a fake
clock and fake timers, no sleeping.

Every way a wait can end (granted, timed out, displaced, its client gone, its task
cancelled) gives back what it took: its place in the queue and its client's hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from surgeguard.limiter import Limiter, Waiter
from surgeguard.priority import Priority
from tests.support.clock import FakeClock
from tests.support.timers import FakeTimers

C, N, S = Priority.CRITICAL, Priority.NORMAL, Priority.SHEDDABLE


@pytest.fixture
def timers(fake_clock: FakeClock) -> FakeTimers:
    return FakeTimers(fake_clock)


def make(timers: FakeTimers, limit: int, queue_limit: int, **kwargs: float) -> Limiter:
    return Limiter(
        limit, queue_limit, 0.5, clock=timers.clock, call_later=timers.call_later, **kwargs
    )


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_cancelled_waiter_leaves_the_queue_and_an_idle_limiter_admits_at_once(
    timers: FakeTimers,
) -> None:
    """Cancelling the waiting task cancels its future; the waiter must leave anyway.
    Before: ``waiting`` stayed 1 for good, so with nothing in flight every later
    request queued behind a ghost and timed out (429 queue_timeout on an idle replica)."""
    limiter = make(timers, limit=1, queue_limit=4)
    assert limiter.try_acquire(N, None) is None
    waiter = limiter.try_acquire(N, b"gone")
    assert isinstance(waiter, Waiter)
    task = asyncio.create_task(limiter.wait(waiter))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.waiting == 0
    assert limiter.stats().waiting_by_priority == {"critical": 0, "normal": 0, "sheddable": 0}
    limiter.release(None)
    assert limiter.in_flight == 0  # the slot went to nobody
    timers.advance(1.0)  # its timer, had it stayed, finds nothing to do
    assert limiter.rejected["queue_timeout"] == 0
    assert limiter.try_acquire(N, b"gone") is None  # a slot at once, not a queue place
    assert limiter.in_flight == 1


async def test_abandoning_twice_gives_a_granted_slot_back_once(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=4)
    assert limiter.try_acquire(N, None) is None
    waiter = limiter.try_acquire(N, None)
    assert isinstance(waiter, Waiter)
    limiter.release(None)  # granted to the waiter
    assert limiter.in_flight == 1
    limiter.abandon(waiter)  # its client left...
    limiter.abandon(waiter)  # ...and then its task was cancelled too
    assert limiter.in_flight == 0
    assert limiter.try_acquire(N, None) is None


# -- client-share holds ---------------------------------------------------------------------

NOISY = b"noisy"


def _time_out(limiter: Limiter, timers: FakeTimers, waiter: Waiter) -> None:
    timers.advance(0.6)
    assert waiter.result == "queue_timeout"


def _client_leaves(limiter: Limiter, timers: FakeTimers, waiter: Waiter) -> None:
    limiter.abandon(waiter)
    assert waiter.result == "client_disconnected"


def _displaced(limiter: Limiter, timers: FakeTimers, waiter: Waiter) -> None:
    critical = limiter.try_acquire(C, None)  # the queue is full: the sheddable one goes
    assert isinstance(critical, Waiter)
    assert waiter.result == "priority"
    limiter.abandon(critical)


ENDINGS: dict[str, Callable[[Limiter, FakeTimers, Waiter], None]] = {
    "timeout": _time_out,
    "disconnect": _client_leaves,
    "displacement": _displaced,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_wait_that_ends_without_a_slot_gives_back_the_clients_hold(
    timers: FakeTimers, ending: str
) -> None:
    """limit 4 at a client share of 0.5: a client may hold 2 (in flight plus waiting)
    while the service is saturated. Its waits that end without a slot must not count:
    otherwise, after two of them, it is refused (client_share) whenever the service is
    busy, for good."""
    limiter = make(timers, limit=4, queue_limit=1, client_share=0.5, sheddable_queue_share=1.0)
    for _ in range(4):
        assert limiter.try_acquire(N, b"other") is None  # saturated by someone else
    for _ in range(3):
        waiter = limiter.try_acquire(S, NOISY)
        assert isinstance(waiter, Waiter), f"refused: {waiter}"
        ENDINGS[ending](limiter, timers, waiter)
        assert limiter.waiting == 0
    # It holds nothing now: two requests of its own may queue and run.
    limiter.set_limits(queue_limit=2)
    first = limiter.try_acquire(S, NOISY)
    second = limiter.try_acquire(S, NOISY)
    assert isinstance(first, Waiter) and isinstance(second, Waiter)
    assert limiter.try_acquire(S, NOISY) == "client_share"  # and the share still holds


async def test_a_cancelled_wait_gives_back_the_clients_hold(timers: FakeTimers) -> None:
    limiter = make(timers, limit=2, queue_limit=4, client_share=0.5)
    for _ in range(2):
        assert limiter.try_acquire(N, b"other") is None
    for _ in range(2):
        waiter = limiter.try_acquire(N, NOISY)
        assert isinstance(waiter, Waiter), f"refused: {waiter}"
        task = asyncio.create_task(limiter.wait(waiter))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert limiter.waiting == 0
    assert isinstance(limiter.try_acquire(N, NOISY), Waiter)  # it holds nothing
    assert limiter.try_acquire(N, NOISY) == "client_share"  # its share: 1 of 2


async def test_a_granted_wait_moves_the_hold_to_the_slot_and_release_drops_it(
    timers: FakeTimers,
) -> None:
    limiter = make(timers, limit=2, queue_limit=4, client_share=0.5)
    assert limiter.try_acquire(N, b"other") is None
    assert limiter.try_acquire(N, b"other") is None
    waiter = limiter.try_acquire(N, NOISY)
    assert isinstance(waiter, Waiter)
    limiter.release(b"other")
    assert await limiter.wait(waiter) is None
    assert limiter.try_acquire(N, NOISY) == "client_share"  # in flight: it holds 1 of 1
    limiter.release(NOISY)
    assert limiter.try_acquire(N, b"other") is None  # saturated again
    assert isinstance(limiter.try_acquire(N, NOISY), Waiter)  # it holds nothing: may queue
