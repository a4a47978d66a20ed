"""The penalty box, pure, on a fake clock (issue 11: clients that ignore Retry-After)."""

from __future__ import annotations

import random

import pytest

from surgeguard.penalty_box import FULL, PenaltyBox
from tests.support.clock import FakeClock

CLIENT = ("127.0.0.1", 50_001)
OTHER = ("127.0.0.1", 50_002)


def box(clock: FakeClock, **kwargs: int | float) -> PenaltyBox:
    """Exact numbers: no spread unless a test asks for it; growth 2 is easy to read."""
    kwargs.setdefault("spread", 0.0)
    kwargs.setdefault("growth", 2)
    return PenaltyBox(clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_client_never_told_to_wait_is_decided_at_once() -> None:
    b = box(FakeClock())
    assert b.arrive(CLIENT) == 0.0
    assert b.held == 0 and b.holds == 0


def test_a_repeat_before_retry_after_waits_exactly_until_then() -> None:
    clock = FakeClock()
    b = box(clock)
    assert b.told_to_wait(CLIENT, 2) == 2
    clock.advance(0.25)
    assert b.arrive(CLIENT) == pytest.approx(1.75)
    assert b.held == 1 and b.holds == 1
    b.released()
    assert b.held == 0


def test_a_polite_repeat_is_immediate_and_keeps_the_usual_retry_after() -> None:
    clock = FakeClock()
    b = box(clock)
    b.told_to_wait(CLIENT, 2)
    clock.advance(2.0)
    assert b.arrive(CLIENT) == 0.0
    # Rejected again: the same Retry-After as anyone, no strike held against it.
    assert b.told_to_wait(CLIENT, 2) == 2
    assert b.strikes(CLIENT) == 0


def test_each_early_return_doubles_the_next_retry_after_up_to_the_bound() -> None:
    clock = FakeClock()
    b = box(clock, max_retry_after_s=30)
    given = [b.told_to_wait(CLIENT, 1)]
    for _ in range(7):
        delay = b.arrive(CLIENT)  # back at once, every time
        assert delay == pytest.approx(given[-1])
        clock.advance(delay)  # held until its Retry-After...
        b.released()
        given.append(b.told_to_wait(CLIENT, 1))  # ...then decided: rejected again
    assert given == [1, 2, 4, 8, 16, 30, 30, 30]


def test_the_default_growth_reaches_the_bound_in_three_early_returns() -> None:
    clock = FakeClock()
    b = box(clock, growth=4, max_retry_after_s=30)
    given = [b.told_to_wait(CLIENT, 2)]
    for _ in range(4):
        clock.advance(b.arrive(CLIENT))
        b.released()
        given.append(b.told_to_wait(CLIENT, 2))
    assert given == [2, 8, 30, 30, 30]


def test_a_grown_retry_after_is_spread_down_but_never_below_the_usual_value() -> None:
    clock = FakeClock()
    seen = set()
    for seed in range(200):
        b = PenaltyBox(clock=clock, growth=4, spread=0.5, rng=random.Random(seed))
        b.told_to_wait(seed, 2)
        clock.advance(b.arrive(seed))
        b.released()
        b.told_to_wait(seed, 2)  # grown to 8, then spread over [4, 8]
        clock.advance(b.arrive(seed))
        b.released()
        seen.add(b.told_to_wait(seed, 2))  # grown to 30, spread over [15, 30]
    assert min(seen) >= 15 and max(seen) == 30
    assert len(seen) >= 10  # really spread: not three values that bunch clients up


def test_served_after_a_hold_does_not_forgive_strikes() -> None:
    """An impatient client that got a slot after its hold and asks again at once is
    decided at once (nothing was pending), but a new rejection still grows."""
    clock = FakeClock()
    b = box(clock)
    b.told_to_wait(CLIENT, 1)
    clock.advance(b.arrive(CLIENT))
    b.released()  # admitted after the hold
    assert b.arrive(CLIENT) == 0.0  # its next request: nothing pending
    assert b.told_to_wait(CLIENT, 1) == 2


def test_clients_are_held_apart() -> None:
    clock = FakeClock()
    b = box(clock)
    b.told_to_wait(CLIENT, 3)
    assert b.arrive(OTHER) == 0.0
    assert b.arrive(CLIENT) == pytest.approx(3.0)


def test_past_the_bound_an_early_request_is_answered_full_without_a_strike() -> None:
    clock = FakeClock()
    b = box(clock, max_held=1)
    b.told_to_wait(CLIENT, 2)
    b.told_to_wait(OTHER, 2)
    assert b.arrive(CLIENT) == pytest.approx(2.0)
    assert b.arrive(OTHER) == FULL
    assert b.held == 1 and b.full == 1
    assert b.strikes(OTHER) == 0
    b.released()
    assert b.arrive(OTHER) == pytest.approx(2.0)  # room again


def test_a_box_of_zero_holds_nobody() -> None:
    clock = FakeClock()
    b = box(clock, max_held=0)
    b.told_to_wait(CLIENT, 1)
    assert b.arrive(CLIENT) == FULL


def test_old_entries_expire() -> None:
    clock = FakeClock()
    b = box(clock, max_retry_after_s=10, forget_after_s=20)
    b.told_to_wait(CLIENT, 1)
    b.arrive(CLIENT)  # a strike
    b.released()
    clock.advance(1 + 20.5)
    b.told_to_wait(OTHER, 1)  # any new entry sweeps the expired ones
    assert b.clients == 1
    assert b.strikes(CLIENT) == 0
    assert b.told_to_wait(CLIENT, 1) == 1  # a fresh start


def test_entries_within_their_horizon_are_kept() -> None:
    clock = FakeClock()
    b = box(clock, max_retry_after_s=10, forget_after_s=20)
    b.told_to_wait(CLIENT, 1)
    clock.advance(5)
    b.told_to_wait(OTHER, 1)
    assert b.clients == 2


def test_remembered_clients_are_bounded_oldest_first() -> None:
    clock = FakeClock()
    b = box(clock, max_clients=3)
    for port in range(5):
        b.told_to_wait(("10.0.0.1", port), 2)
        clock.advance(0.01)
    assert b.clients == 3
    assert b.arrive(("10.0.0.1", 0)) == 0.0  # forgotten
    assert b.arrive(("10.0.0.1", 4)) > 0.0  # remembered


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retry_after_s": 0}, "max_retry_after_s must be >= 1 s, got 0"),
        ({"max_held": -1}, "max_held must be >= 0 requests, got -1"),
        ({"growth": 0}, "growth must be >= 1"),
        ({"spread": 1.0}, r"spread must be in \[0, 1\), got 1.0"),
        ({"max_clients": 0}, "max_clients must be >= 1, got 0"),
        ({"forget_after_s": -1.0}, "forget_after_s must be >= 0 s, got -1.0"),
    ],
)
def test_bad_settings_name_the_problem(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PenaltyBox(**kwargs)  # type: ignore[arg-type]
