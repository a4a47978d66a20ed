"""Dividing a shared dependency's budget among the replicas: pure, no I/O, no clock.

A budget is the calls in flight a dependency honours across ALL replicas (for
Postgres: ``max_connections`` less a reserve). ``divide`` turns this tick's picture
(each replica's demand, the share published for it, the limit it reports enforcing)
into the next shares:

- every replica gets at least the knob's minimum; the rest of the total goes to the
  replicas in proportion to their demand (calls in flight + waiting for a slot),
  rounded by largest remainder, none above the knob's maximum; an idle replica keeps
  the minimum;
- a share goes down at once, but a share goes up only out of slots that are free both
  on paper and in what the replicas still enforce: a replica that has not applied its
  cut yet still holds its slots. So the sum over the replicas of max(new share,
  enforced limit) never exceeds the total (unless it already did: then nothing grows
  until the cuts are applied);
- a share within one slot (or ``deadband`` of itself) of where demand puts it stays
  where it is, so a steady demand leaves the shares still;
- a replica whose demand is unknown this tick (not read) keeps its share and holds
  its slots; a joining replica (no share yet) runs at the minimum until it is granted
  more; a departed one is simply not among the claims, and its slots are free;
- a replica that starts takes its minimum before the controller has seen it, so one
  minimum is kept free (``reserve``, when the total allows it): a join never takes
  the sum past the total, and the joiner's share then comes out of the others'. Two
  replicas starting within one tick can, by one minimum, until the next tick's cuts.

When the total cannot give every replica its minimum, each gets the minimum anyway (a
replica cannot run on less) and the division says by how much that is over the budget
(``over``): a warning to log and show, never a silent breach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    """One replica's hold on a budget this tick.

    demand: calls in flight + waiting (None: not read this tick, its share holds).
    share: the share published for it (None: none yet; it runs at the minimum).
    enforced: the limit it reports enforcing, calls (None: unknown, taken as its share).
    """

    replica: str
    demand: float | None
    share: int | None
    enforced: int | None = None


@dataclass(frozen=True)
class Division:
    """The next shares (replica -> calls), where demand puts each (``targets``), a
    reason for each replica whose share moved (``why``) and one for the budget."""

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
    reserve: int | None = None,
) -> Division:
    """The next shares of ``total`` calls of ``dependency`` (see the module). ``minimum``
    and ``maximum``: the knob's bounds, calls; ``deadband``: the share of itself (0..1)
    by which a share may differ from its target and stay; ``reserve``: calls kept free
    for a replica that starts (default: one minimum; less when the total is tight)."""
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
    if total < len(claims) * minimum:
        return _minimums(label, total, claims, minimum)

    spare = total - len(claims) * minimum
    usable = total - max(0, min(spare, minimum if reserve is None else reserve))
    current = {c.replica: _clamp(c.share, minimum, maximum) for c in claims}
    enforced = {c.replica: current[c.replica] if c.enforced is None else c.enforced for c in claims}
    targets = _targets(usable, claims, current, minimum, maximum)
    wanted: dict[str, int] = {}
    for c in claims:
        t, now = targets[c.replica], current[c.replica]
        steady = c.demand is not None and c.demand > 0 and t != minimum
        if steady and abs(t - now) <= max(1, math.floor(deadband * now)):
            t = now  # close enough: moving one slot back and forth helps nobody
        wanted[c.replica] = t

    # Cuts at once; grows only out of what is free in max(paper, enforced).
    shares = {r: min(wanted[r], current[r]) for r in names}
    free = usable - sum(max(shares[r], enforced[r]) for r in names)
    growing = sorted(
        (r for r in names if wanted[r] > current[r]), key=lambda r: (current[r] - wanted[r], r)
    )
    asked = {r: wanted[r] - current[r] for r in growing}
    granted = _apportion(max(0, free), asked)
    for r in growing:
        shares[r] = current[r] + granted[r]

    by_claim = {c.replica: c for c in claims}
    why: dict[str, str] = {}
    for r in names:
        c = by_claim[r]
        if c.share == shares[r]:
            continue
        demand = "unknown" if c.demand is None else f"{c.demand:.1f}"
        text = (
            f"{label}: share {_shown(c.share)} -> {shares[r]}, "
            f"demand {demand} of {demand_all:.1f} in all"
        )
        if shares[r] < wanted[r]:
            text += f" (wants {wanted[r]}: the rest when others apply their cuts)"
        why[r] = text
    short = [r for r in growing if shares[r] < wanted[r]]
    parts = ", ".join(f"{r} {shares[r]}" for r in names)
    reason = f"{label} over {len(names)} replicas by demand {demand_all:.1f}: {parts}"
    if short:
        reason += f"; {', '.join(short)} wait for slots others still hold"
    return Division(total, shares, targets, why, reason)


def _minimums(label: str, total: int, claims: Sequence[Claim], minimum: int) -> Division:
    """Too small a total for every replica's minimum: the minimums, and by how much."""
    over = len(claims) * minimum - total
    shares = {c.replica: minimum for c in claims}
    why = {
        c.replica: f"{label}: share {_shown(c.share)} -> {minimum}, the minimum: the "
        f"budget cannot give {len(claims)} replicas {minimum} each"
        for c in claims
        if c.share != minimum
    }
    reason = (
        f"{label} < {len(claims)} replicas x minimum {minimum}: each gets the minimum, "
        f"{len(claims) * minimum} in all, {over} over the budget"
    )
    return Division(total, shares, dict(shares), why, reason, over)


def _shown(share: int | None) -> str:
    return "none" if share is None else str(share)


def _clamp(share: int | None, minimum: int, maximum: int) -> int:
    return minimum if share is None else max(minimum, min(maximum, share))


def _targets(
    total: int,
    claims: Sequence[Claim],
    current: Mapping[str, int],
    minimum: int,
    maximum: int,
) -> dict[str, int]:
    """Where demand puts each share: the minimum each, then what is left of ``total``
    (after the shares of replicas whose demand is unknown) in proportion to demand,
    none above ``maximum``."""
    held = {c.replica: current[c.replica] for c in claims if c.demand is None}
    active = {c.replica: max(0.0, c.demand) for c in claims if c.demand is not None}
    targets = {**held, **dict.fromkeys(active, minimum)}
    pool = total - sum(held.values()) - minimum * len(active)
    # Water-filling: a replica that reaches the maximum gives the rest back to the others.
    open_ = {r: d for r, d in active.items() if d > 0}
    while pool > 0 and open_:
        extra = _apportion(pool, {r: d for r, d in open_.items()}, proportional=True)
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
