"""The budget divider (``surgeguard_controller.budgets``), pure: its invariants over
many random pictures (hypothesis), and a few ticks of replicas that apply their shares
late, whose demand shifts, that join and that leave (issue 15)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgeguard_controller.budgets import Claim, Division, divide

claims_strategy = st.lists(
    st.builds(
        Claim,
        replica=st.sampled_from("abcdefgh"),
        demand=st.none() | st.floats(0, 60, allow_nan=False),
        share=st.none() | st.integers(0, 80),
        enforced=st.none() | st.integers(0, 80),
    ),
    min_size=0,
    max_size=7,
    unique_by=lambda c: c.replica,
)


def _held(claims: list[Claim], shares: dict[str, int], minimum: int, maximum: int) -> int:
    """Slots in use on paper or in practice: max(share, enforced) over the replicas
    (an unknown enforced limit is taken to be the share it had)."""
    total = 0
    for c in claims:
        before = minimum if c.share is None else max(minimum, min(maximum, c.share))
        enforced = before if c.enforced is None else c.enforced
        total += max(shares[c.replica], enforced)
    return total


@settings(max_examples=400, deadline=None)
@given(
    claims=claims_strategy,
    total=st.integers(1, 120),
    minimum=st.integers(1, 6),
    span=st.integers(0, 60),
)
def test_what_the_divider_hands_out_never_takes_the_budget_past_its_total(
    claims: list[Claim], total: int, minimum: int, span: int
) -> None:
    maximum = minimum + span
    d = divide("db", total, claims, minimum=minimum, maximum=maximum)
    assert set(d.shares) == {c.replica for c in claims}
    assert all(minimum <= s <= maximum for s in d.shares.values())
    if len(claims) * minimum > total:
        # Short: the minimums only, said, and by how much they are over.
        assert set(d.shares.values()) <= {minimum}
        assert d.over == len(claims) * minimum - total
        assert "over the budget" in d.reason
        return
    assert d.over == 0
    current = {
        c.replica: minimum if c.share is None else max(minimum, min(maximum, c.share))
        for c in claims
    }
    before = _held(claims, current, minimum, maximum)
    after = _held(claims, dict(d.shares), minimum, maximum)
    # Slots are granted only out of what is free on paper and in practice.
    assert after <= max(total, before)
    if before <= total:
        assert after <= total
    # One minimum stays free for a replica that starts, when the total allows it.
    if total >= (len(claims) + 1) * minimum and before <= total - minimum:
        assert after <= total - minimum
    assert sum(d.shares.values()) <= max(total, sum(current.values()))
    for c in claims:
        if c.demand is None:  # not read this tick: it keeps its share
            assert d.shares[c.replica] == current[c.replica]
        elif c.demand == 0:  # idle: the minimum
            assert d.shares[c.replica] == minimum
        if d.shares[c.replica] != c.share:  # every move says why
            assert d.why[c.replica].startswith(f"budget db {total}: share ")


def test_shares_follow_demand_by_largest_remainder() -> None:
    d = divide(
        "db",
        24,
        [Claim("a", 9.0, None, 1), Claim("b", 3.0, None, 1), Claim("c", 0.0, None, 1)],
        minimum=1,
        maximum=40,
    )
    # 24 - 1 kept for a joiner - 3 minimums = 20, by demand 9:3: 15 and 5.
    assert d.shares == {"a": 16, "b": 6, "c": 1}
    assert d.why["a"] == "budget db 24: share none -> 16, demand 9.0 of 12.0 in all"
    assert "c" in d.why and "b 6" in d.reason


def test_a_cut_applies_at_once_but_its_slots_go_to_others_only_once_it_is_enforced() -> None:
    # a had 20 and its demand fell; b wants more. a still enforces 20.
    picture = [Claim("a", 2.0, 20, 20), Claim("b", 10.0, 4, 4)]
    first = divide("db", 24, picture, minimum=1, maximum=40)
    assert first.shares["a"] < 20 and first.shares["b"] == 4  # nothing free yet
    assert "b wait for slots others still hold" in first.reason
    assert "(wants " in first.why["a"] or first.why.get("b") is None
    # a applied its cut: now b gets the slots.
    later = divide(
        "db",
        24,
        [Claim("a", 2.0, first.shares["a"], first.shares["a"]), Claim("b", 10.0, 4, 4)],
        minimum=1,
        maximum=40,
    )
    assert later.shares["b"] > 4
    assert later.shares["a"] + later.shares["b"] <= 24


def test_too_small_a_budget_hands_out_minimums_and_says_by_how_much_it_is_over() -> None:
    d = divide("db", 5, [Claim(r, 4.0, 3, 3) for r in "abc"], minimum=2, maximum=10)
    assert d.shares == {"a": 2, "b": 2, "c": 2} and d.over == 1
    assert d.reason == (
        "budget db 5 < 3 replicas x minimum 2: each gets the minimum, 6 in all, 1 over the budget"
    )


def test_no_replicas_and_bad_arguments() -> None:
    assert divide("db", 8, [], minimum=1, maximum=8).shares == {}
    with pytest.raises(ValueError, match="total must be >= 1 calls, got 0"):
        divide("db", 0, [], minimum=1, maximum=8)
    with pytest.raises(ValueError, match=r"1 <= min <= max, got \[3, 2\]"):
        divide("db", 8, [], minimum=3, maximum=2)
    with pytest.raises(ValueError, match="once"):
        divide("db", 8, [Claim("a", 1, 1), Claim("a", 1, 1)], minimum=1, maximum=8)


# -- ticks: replicas that apply their shares late ---------------------------------------


class Fleet:
    """Replicas with an offered load (calls they would have in flight, unlimited),
    each applying its published share one or two ticks late (seeded), and a demand as
    a replica measures it: in flight (at most its limit) + those waiting for a slot
    (some of the excess)."""

    def __init__(self, total: int, offered: dict[str, float], seed: int) -> None:
        self.total, self.offered = total, dict(offered)
        self.rng = random.Random(seed)
        self.shares: dict[str, int | None] = dict.fromkeys(offered)
        self.enforced: dict[str, int] = dict.fromkeys(offered, 1)  # the start rule
        self.pending: dict[str, list[int]] = {r: [] for r in offered}
        self.moves = 0

    def join(self, replica: str, offered: float) -> None:
        self.offered[replica] = offered
        self.shares[replica], self.enforced[replica], self.pending[replica] = None, 1, []

    def leave(self, replica: str) -> None:
        for part in (self.offered, self.shares, self.enforced, self.pending):
            del part[replica]  # type: ignore[attr-defined]

    def tick(self) -> Division:
        claims = []
        for r, offered in self.offered.items():
            in_flight = min(offered, self.enforced[r])
            waiting = 0.4 * max(0.0, offered - self.enforced[r])
            noise = self.rng.uniform(-0.3, 0.3)
            claims.append(
                Claim(r, max(0.0, in_flight + waiting + noise), self.shares[r], self.enforced[r])
            )
        d = divide("db", self.total, claims, minimum=1, maximum=64)
        for r, share in d.shares.items():
            if share != self.shares[r]:
                self.moves += 1
                self.pending[r].append(share)
            self.shares[r] = share
        # What the replicas enforce: some apply this tick's document, some a later one
        # (a replica applies the newest document it reads, never an older one).
        for r, queue in self.pending.items():
            if queue and self.rng.random() < 0.6:
                self.enforced[r] = queue[-1]
                queue.clear()
        held = sum(max(self.shares[r] or 1, self.enforced[r]) for r in self.offered)
        assert held <= self.total, f"{held} slots held of {self.total}"
        assert sum(self.enforced.values()) <= self.total
        return d


@pytest.mark.parametrize("seed", range(12))
def test_shares_follow_the_load_as_it_shifts_joins_and_leaves(seed: int) -> None:
    fleet = Fleet(24, {"a": 30.0, "b": 0.0}, seed)
    for _ in range(15):
        fleet.tick()
    assert fleet.shares["a"] == 22 and fleet.shares["b"] == 1  # a has the load (1 kept)
    # The load moves to b: within a few ticks b holds most of the budget.
    fleet.offered.update(a=0.0, b=30.0)
    ticks = next(n for n in range(1, 30) if (fleet.tick().shares["b"] or 0) >= 20)
    assert ticks <= 10
    # Steady load: the shares settle and stay still.
    for _ in range(10):
        fleet.tick()
    moves = fleet.moves
    for _ in range(20):
        fleet.tick()
    assert fleet.moves == moves
    # A third replica joins with load of its own: it starts at the minimum and is
    # granted a share taken from b's.
    fleet.offered["a"] = 0.0
    fleet.join("c", 30.0)
    first = fleet.tick()
    # Nothing is free until b applies its cut: c keeps the minimum it started with.
    assert first.shares["c"] == 1 and first.shares["b"] < 22
    for _ in range(25):
        fleet.tick()
    assert 8 <= (fleet.shares["c"] or 0) <= 15 and (fleet.shares["b"] or 0) <= 15
    # b leaves: its slots come back to c.
    fleet.leave("b")
    for _ in range(15):
        fleet.tick()
    assert fleet.shares["c"] == 22


@pytest.mark.parametrize("seed", range(8))
def test_steady_demand_leaves_the_shares_still(seed: int) -> None:
    rng = random.Random(seed)
    offered = {r: rng.uniform(2, 20) for r in "abcd"}
    fleet = Fleet(40, offered, seed)
    for _ in range(40):
        fleet.tick()
    moves = fleet.moves
    for _ in range(40):
        fleet.tick()
    assert fleet.moves - moves <= 2  # the noise of a measured demand moves nothing
