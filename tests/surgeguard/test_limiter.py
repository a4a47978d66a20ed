"""The limiter's rules, deterministically: a fake clock and fake timers, no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from surgeguard.limiter import Limiter, Waiter
from surgeguard.priority import Priority
from tests.support.clock import FakeClock
from tests.support.timers import FakeTimers

C, N, S = Priority.CRITICAL, Priority.NORMAL, Priority.SHEDDABLE


@pytest.fixture
def timers(fake_clock: FakeClock) -> FakeTimers:
    return FakeTimers(fake_clock)


def make(
    timers: FakeTimers,
    limit: int = 2,
    queue_limit: int = 4,
    timeout_s: float = 0.5,
    **kwargs: float,
) -> Limiter:
    return Limiter(
        limit, queue_limit, timeout_s, clock=timers.clock, call_later=timers.call_later, **kwargs
    )


async def settle() -> None:
    """Let resolved futures' callbacks run (no time passes)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_admits_up_to_the_limit_then_queues(timers: FakeTimers) -> None:
    limiter = make(timers, limit=2)
    assert limiter.try_acquire(N, None) is None
    assert limiter.try_acquire(N, None) is None
    third = limiter.try_acquire(N, None)
    assert isinstance(third, Waiter)
    assert (limiter.in_flight, limiter.waiting) == (2, 1)


async def test_release_hands_the_slot_to_the_waiter_before_anyone_else(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1)
    assert limiter.try_acquire(N, None) is None
    waiter = limiter.try_acquire(N, None)
    assert isinstance(waiter, Waiter)
    limiter.release(None)
    # The slot is already the waiter's: a newcomer must queue, not steal it.
    assert limiter.in_flight == 1
    assert isinstance(limiter.try_acquire(N, None), Waiter)
    assert await limiter.wait(waiter) is None


async def test_queue_never_exceeds_queue_limit(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=3)
    limiter.try_acquire(N, None)
    results = [limiter.try_acquire(N, None) for _ in range(10)]
    assert sum(isinstance(r, Waiter) for r in results) == 3
    assert results[3:] == ["queue_full"] * 7
    assert limiter.waiting == 3
    assert limiter.stats().rejected["queue_full"] == 7


async def test_queue_timeout_rejects_after_exactly_the_timeout(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, timeout_s=0.5)
    limiter.try_acquire(N, None)
    waiter = limiter.try_acquire(N, None)
    assert isinstance(waiter, Waiter)
    timers.advance(0.499)
    assert not waiter.future.done()
    timers.advance(0.002)
    assert await limiter.wait(waiter) == "queue_timeout"
    assert limiter.waiting == 0
    assert limiter.stats().rejected["queue_timeout"] == 1


async def test_sheddable_only_fills_its_share_of_the_queue(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=4, sheddable_queue_share=0.5)
    limiter.try_acquire(N, None)
    assert isinstance(limiter.try_acquire(S, None), Waiter)
    assert isinstance(limiter.try_acquire(S, None), Waiter)
    assert limiter.try_acquire(S, None) == "priority"
    # Normal traffic still has room.
    assert isinstance(limiter.try_acquire(N, None), Waiter)


async def test_critical_displaces_the_newest_sheddable_when_the_queue_is_full(
    timers: FakeTimers,
) -> None:
    limiter = make(timers, limit=1, queue_limit=2, sheddable_queue_share=1.0)
    limiter.try_acquire(N, None)
    older = limiter.try_acquire(S, None)
    newer = limiter.try_acquire(S, None)
    assert isinstance(older, Waiter) and isinstance(newer, Waiter)
    critical = limiter.try_acquire(C, None)
    assert isinstance(critical, Waiter)
    assert await limiter.wait(newer) == "priority"
    assert not older.future.done()
    assert limiter.waiting == 2


async def test_sheddable_cannot_displace_anyone(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=1, sheddable_queue_share=1.0)
    limiter.try_acquire(N, None)
    normal = limiter.try_acquire(N, None)
    assert isinstance(normal, Waiter)
    assert limiter.try_acquire(S, None) == "priority"
    assert limiter.try_acquire(N, None) == "queue_full"
    assert not normal.future.done()


async def test_waiters_are_served_most_important_first(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=10, sheddable_queue_share=1.0)
    limiter.try_acquire(N, None)
    arrivals = [(S, "s1"), (N, "n1"), (C, "c1"), (S, "s2"), (C, "c2"), (N, "n2")]
    granted: list[str] = []
    for priority, name in arrivals:
        waiter = limiter.try_acquire(priority, None)
        assert isinstance(waiter, Waiter)
        waiter.future.add_done_callback(lambda _, name=name: granted.append(name))
    for _ in arrivals:
        limiter.release(None)
        await settle()
    assert granted == ["c1", "c2", "n1", "n2", "s1", "s2"]


async def test_raising_the_limit_admits_waiters_at_once(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1, queue_limit=5)
    limiter.try_acquire(N, None)
    waiters = [limiter.try_acquire(N, None) for _ in range(3)]
    limiter.set_limits(limit=3)
    granted = [w for w in waiters if isinstance(w, Waiter) and w.future.done()]
    assert len(granted) == 2
    assert limiter.in_flight == 3


async def test_lowering_the_limit_never_cancels_work_in_flight(timers: FakeTimers) -> None:
    limiter = make(timers, limit=4)
    for _ in range(4):
        assert limiter.try_acquire(N, None) is None
    limiter.set_limits(limit=1)
    assert limiter.in_flight == 4  # all four keep running
    waiter = limiter.try_acquire(N, None)
    assert isinstance(waiter, Waiter)
    for _ in range(3):
        limiter.release(None)
        assert not waiter.future.done()  # still 1 in flight: at the new limit
    limiter.release(None)
    assert await limiter.wait(waiter) is None
    assert limiter.in_flight == 1


async def test_one_client_cannot_hold_more_than_its_share_when_saturated(
    timers: FakeTimers,
) -> None:
    limiter = make(timers, limit=4, queue_limit=10, client_share=0.5)
    noisy, quiet = b"noisy", b"quiet"
    # Not saturated: the noisy client may use idle capacity.
    for _ in range(3):
        assert limiter.try_acquire(N, noisy) is None
    assert limiter.try_acquire(N, quiet) is None
    # Saturated now: the noisy client already holds more than 2 (= 50% of 4).
    assert limiter.try_acquire(N, noisy) == "client_share"
    quiet_waiter = limiter.try_acquire(N, quiet)
    assert isinstance(quiet_waiter, Waiter)
    limiter.release(noisy)
    assert await limiter.wait(quiet_waiter) is None


async def test_an_abandoned_waiter_leaves_the_queue(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1)
    limiter.try_acquire(N, None)
    waiter = limiter.try_acquire(N, b"gone")
    assert isinstance(waiter, Waiter)
    limiter.abandon(waiter)
    assert limiter.waiting == 0
    assert limiter.stats().disconnected == 1
    limiter.release(None)
    assert limiter.in_flight == 0  # the slot went to nobody


async def test_a_cancelled_wait_gives_back_a_slot_it_was_just_granted(timers: FakeTimers) -> None:
    limiter = make(timers, limit=1)
    limiter.try_acquire(N, None)
    waiter = limiter.try_acquire(N, None)
    assert isinstance(waiter, Waiter)
    task = asyncio.create_task(limiter.wait(waiter))
    await settle()
    limiter.release(None)  # granted to the waiter...
    task.cancel()  # ...whose request is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.in_flight == 0


async def test_stats_snapshot(timers: FakeTimers) -> None:
    limiter = make(timers, limit=2, queue_limit=2)
    limiter.try_acquire(N, None)
    limiter.try_acquire(N, None)
    limiter.try_acquire(S, None)
    stats = limiter.stats()
    assert (stats.limit, stats.in_flight, stats.waiting) == (2, 2, 1)
    assert stats.waiting_by_priority == {"critical": 0, "normal": 0, "sheddable": 1}
    assert stats.admitted == 2 and stats.peak_in_flight == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_share": 0.0}, r"client_share must be in \(0, 1\], got 0.0"),
        ({"sheddable_queue_share": 1.5}, r"sheddable_queue_share must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_construction_says_the_range(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limiter(1, 1, 1.0, **kwargs)  # type: ignore[arg-type]


def test_bad_limits_change_nothing() -> None:
    limiter = Limiter(5, 5, 1.0)
    with pytest.raises(ValueError, match="queue_limit must be >= 0"):
        limiter.set_limits(limit=9, queue_limit=-1)
    assert (limiter.limit, limiter.queue_limit) == (5, 5)


async def test_recent_peak_covers_the_last_one_to_two_windows(timers: FakeTimers) -> None:
    limiter = make(timers, limit=10)
    for _ in range(6):
        limiter.try_acquire(N, None)
    for _ in range(5):
        limiter.release(None)
    assert limiter.recent_peak() == 6
    timers.advance(1.0)
    assert limiter.recent_peak() == 6  # the previous window still counts
    timers.advance(1.0)
    assert limiter.recent_peak() == 1  # both windows since then saw at most 1
    timers.advance(5.0)
    limiter.try_acquire(N, None)
    assert limiter.recent_peak() == 2


async def test_a_client_share_of_one_means_no_per_client_cap(timers: FakeTimers) -> None:
    limiter = make(timers, limit=2, queue_limit=4, client_share=1.0)
    for _ in range(2):
        assert limiter.try_acquire(N, b"only") is None
    # Saturated, and this client holds the whole limit: it queues like anyone else.
    assert isinstance(limiter.try_acquire(N, b"only"), Waiter)
