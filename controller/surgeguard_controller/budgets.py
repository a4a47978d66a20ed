"""Dividing a shared dependency's budget among the replicas: pure, no I/O, no clock.

A budget is the calls in flight a dependency honours across ALL replicas (for
Postgres: ``max_connections`` less a reserve). ``divide`` turns this tick's picture
(each replica's demand, the share published for it, the limit it reports enforcing)
into the next shares:

- every replica with a share keeps at least the knob's minimum; the rest of the total
  goes to the replicas in proportion to their demand (calls in flight + waiting for a
  slot + the slots the calls its bulkhead refused would have needed), rounded by
  largest remainder, none above the knob's maximum; an idle replica keeps the minimum;
- a share goes down at once, but a share goes up only out of slots that are free both
  on paper and in what the replicas still enforce: a replica that has not applied its
  cut yet still holds its slots. So the sum over the replicas of max(new share,
  enforced limit) never exceeds the total (unless it already did: then nothing grows
  until the cuts are applied);
- free slots are never left idle while a replica's demand exceeds its share (short of
  its maximum): a share within one slot (or ``deadband`` of itself) of where demand
  puts it is not cut, so a steady demand leaves the shares still, but the deadband
  only stops slots moving from one replica to another: free slots are always handed
  out. A cut inside the deadband is made when a replica further from its target (a
  joiner waiting for its first slots, a share far below its target) needs the slots;
- a replica whose demand is unknown this tick (not read) keeps its share and holds
  its slots; a departed one is simply not among the claims, and its slots are free;
- no slots are kept in reserve for a replica that starts: a replica with no share of
  its own (a joiner) enforces 0 slots (``ControlState.knobs_for``: its calls to the
  dependency are refused at once) until it is granted one, so a join never takes the
  sum past the total. Its first grant is the minimum or nothing (a share below the
  minimum is no share); when nothing is free the others are cut for it this tick and
  it is granted the slots once they enforce the cuts. The trade-off: the budget is
  used in full, and a joiner waits for its first slots, about one to three ticks after
  the controller first reads it (the cut, the others applying it, the grant).

When the total cannot give every replica that has a share its minimum, each of them
gets the minimum anyway (a replica that has been serving cannot run on less), joiners
get nothing, and the division says by how much that is over the budget (``over``): a
warning to log and show, never a silent breach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    """One replica's hold on a budget this tick.

    demand: calls it would have in flight (None: not read this tick, its share holds).
    share: the share published for it (None: none yet, a joiner: it runs at 0 slots).
    enforced: the limit it reports enforcing, calls (None: unknown, taken as its share).
    """

    replica: str
    demand: float | None
    share: int | None
    enforced: int | None = None


@dataclass(frozen=True)
class Division:
    """The next shares (replica -> calls; a joiner not granted any yet: 0), where
    demand puts each (``targets``), a reason for each replica whose share moved
    (``why``) and one for the budget."""

    total: int
    shares: Mapping[str, int]
    targets: Mapping[str, int]
    why: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    over: int = 0  # calls by which the minimums alone exceed the total (0: within it)


def divide(
    dependency: str,
    total: int,
    claims: Sequence[Claim],
    *,
    minimum: int,
    maximum: int,
    deadband: float = 0.1,
) -> Division:
    """The next shares of ``total`` calls of ``dependency`` (see the module). ``minimum``
    and ``maximum``: the knob's bounds, calls (a replica with a share keeps at least
    the minimum; a joiner has 0 or at least the minimum); ``deadband``: the share of
    itself (0..1) by which a share may exceed its target and not be cut."""
    if total < 1:
        raise ValueError(f"total must be >= 1 calls, got {total}")
    if not 1 <= minimum <= maximum:
        raise ValueError(f"bounds must satisfy 1 <= min <= max, got [{minimum}, {maximum}]")
    if not 0 <= deadband < 1:
        raise ValueError(f"deadband must be in [0, 1), got {deadband}")
    names = [c.replica for c in claims]
    if len(set(names)) != len(names):
        raise ValueError("each replica may claim a budget once")
    label = f"budget {dependency} {total}"
    if not claims:
        return Division(total, {}, {}, reason=f"{label}: no replica to divide it among")
    demand_all = sum(c.demand for c in claims if c.demand is not None)
    joiners = {c.replica for c in claims if c.share is None}
    if total < (len(claims) - len(joiners)) * minimum:
        return _minimums(label, total, claims, minimum)

    current = {
        c.replica: 0 if c.share is None else _clamp(c.share, minimum, maximum) for c in claims
    }
    enforced = {c.replica: current[c.replica] if c.enforced is None else c.enforced for c in claims}
    targets = _targets(total, claims, current, minimum, maximum)

    def band(r: str) -> int:
        return max(1, math.floor(deadband * current[r]))

    # Cuts at once, except one inside the deadband (noise in a measured demand); those
    # are made too when a replica far from its target needs more than is free.
    wanted = dict(targets)
    soft: list[str] = []
    for c in claims:
        r = c.replica
        t, now = targets[r], current[r]
        steady = c.demand is not None and c.demand > 0 and t != minimum
        if steady and t < now <= t + band(r):
            wanted[r] = now  # close enough: moving one slot back and forth helps nobody
            soft.append(r)
    needy = {
        r: targets[r] - current[r]
        for r in names
        if targets[r] > current[r] and (current[r] == 0 or targets[r] - current[r] > band(r))
    }
    if needy and sum(needy.values()) > _free(total, wanted, current, enforced):
        for r in soft:
            wanted[r] = targets[r]

    # Grows only out of what is free in max(paper, enforced): first a joiner's
    # minimum (a share below it is no share), then by what each still asks for.
    shares = {r: min(wanted[r], current[r]) for r in names}

    def free() -> int:  # a slot a replica still enforces is not free, even if granted
        return total - sum(max(shares[r], enforced[r]) for r in names)

    for r in sorted(joiners):
        if wanted[r] >= minimum and free() >= max(0, minimum - enforced[r]):
            shares[r] = minimum
    while (left := free()) > 0:
        growing = sorted(
            (r for r in names if wanted[r] > shares[r] and (r not in joiners or shares[r] > 0)),
            key=lambda r: (shares[r] - wanted[r], r),
        )
        granted = _apportion(left, {r: wanted[r] - shares[r] for r in growing})
        if not any(granted.values()):
            break
        for r in growing:
            shares[r] += granted[r]

    by_claim = {c.replica: c for c in claims}
    why: dict[str, str] = {}
    for r in names:
        c = by_claim[r]
        if c.share == shares[r] or (c.share is None and shares[r] == 0):
            continue
        demand = "unknown" if c.demand is None else f"{c.demand:.1f}"
        text = (
            f"{label}: share {_shown(c.share)} -> {shares[r]}, "
            f"demand {demand} of {demand_all:.1f} in all"
        )
        if shares[r] < wanted[r]:
            text += f" (wants {wanted[r]}: the rest when others apply their cuts)"
        why[r] = text
    short = [r for r in names if shares[r] < wanted[r] and wanted[r] > current[r]]
    parts = ", ".join(f"{r} {shares[r]}" for r in names)
    reason = f"{label} over {len(names)} replicas by demand {demand_all:.1f}: {parts}"
    if short:
        reason += f"; {', '.join(short)} wait for slots others still hold"
    shut = [r for r in sorted(joiners) if targets[r] == 0 and by_claim[r].demand is not None]
    if shut:
        reason += f"; {', '.join(shut)} get no slots: no room for their minimum {minimum}"
    return Division(total, shares, targets, why, reason)


def _free(
    total: int, wanted: Mapping[str, int], current: Mapping[str, int], enforced: Mapping[str, int]
) -> int:
    """Slots free once the cuts in ``wanted`` are made: the total less max(paper,
    enforced) over the replicas (a replica that has not applied a cut still holds it)."""
    return total - sum(max(min(wanted[r], current[r]), enforced[r]) for r in current)


def _minimums(label: str, total: int, claims: Sequence[Claim], minimum: int) -> Division:
    """Too small a total for the minimum of every replica with a share: the minimums,
    and by how much; joiners get nothing."""
    known = [c for c in claims if c.share is not None]
    over = len(known) * minimum - total
    shares = {c.replica: minimum if c.share is not None else 0 for c in claims}
    why = {
        c.replica: f"{label}: share {_shown(c.share)} -> {minimum}, the minimum: the "
        f"budget cannot give {len(known)} replicas {minimum} each"
        for c in known
        if c.share != minimum
    }
    reason = (
        f"{label} < {len(known)} replicas x minimum {minimum}: each gets the minimum, "
        f"{len(known) * minimum} in all, {over} over the budget"
    )
    waiting = sorted(c.replica for c in claims if c.share is None)
    if waiting:
        reason += f"; {', '.join(waiting)} get no slots"
    return Division(total, shares, dict(shares), why, reason, over)


def _shown(share: int | None) -> str:
    return "none" if share is None else str(share)


def _clamp(share: int, minimum: int, maximum: int) -> int:
    return max(minimum, min(maximum, share))


def _targets(
    total: int,
    claims: Sequence[Claim],
    current: Mapping[str, int],
    minimum: int,
    maximum: int,
) -> dict[str, int]:
    """Where demand puts each share: the minimum each, then what is left of ``total``
    (after the shares of replicas whose demand is unknown) in proportion to demand,
    none above ``maximum``. Joiners whose minimum does not fit (by name) get 0."""
    held = {c.replica: current[c.replica] for c in claims if c.demand is None}
    active = {c.replica: max(0.0, c.demand) for c in claims if c.demand is not None}
    targets = {**held, **dict.fromkeys(active, minimum)}
    pool = total - sum(held.values()) - minimum * len(active)
    for c in sorted(claims, key=lambda c: c.replica, reverse=True):
        if pool < 0 and c.share is None and c.demand is not None:
            targets[c.replica] = 0  # no room for its minimum: it waits
            del active[c.replica]
            pool += minimum
    # Water-filling: a replica that reaches the maximum gives the rest back to the others.
    open_ = {r: d for r, d in active.items() if d > 0}
    while pool > 0 and open_:
        extra = _apportion(pool, dict(open_), proportional=True)
        capped = False
        for r, more in extra.items():
            room = maximum - targets[r]
            if more >= room:
                targets[r] = maximum
                pool -= room
                del open_[r]
                capped = True
        if not capped:
            for r, more in extra.items():
                targets[r] += more
            break
    return targets


def _apportion(
    amount: int, weights: Mapping[str, float], *, proportional: bool = False
) -> dict[str, int]:
    """``amount`` whole calls split by ``weights`` with largest remainder (ties by
    name). Not ``proportional``: weights are what each asks for, and each gets at most
    that (all of it when ``amount`` covers every ask)."""
    if not weights:
        return {}
    if not proportional and amount >= sum(weights.values()):
        return {r: int(w) for r, w in weights.items()}
    weight_all = sum(weights.values())
    if weight_all <= 0:
        return dict.fromkeys(weights, 0)
    exact = {r: amount * w / weight_all for r, w in weights.items()}
    given = {r: math.floor(x) for r, x in exact.items()}
    left = amount - sum(given.values())
    for r in sorted(exact, key=lambda r: (given[r] - exact[r], r))[:left]:
        given[r] += 1
    return given
