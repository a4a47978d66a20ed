"""Futile cuts: a knob cut for latency that did not lower it goes back (issue 11).

A cut is a bet that the knob causes the latency. Each knob keeps a short record of
its cuts for latency (``CutHistory``, frozen: the decider replaces it, never edits
it). When the latency after ``n`` such cuts is no lower than before them, the bet
was lost: the knob returns to its value before them and is held there for a while,
instead of being walked down to its minimum on latency it does not move.

A bulkhead's bet can be lost the other way too (issue 14): its latency target is
a multiple of the dependency's healthy baseline, a sign of queueing at it. A cut
that makes the dependency complete far fewer calls while the bulkhead turns calls
away shows the slots were working, not queueing: latency from a CPU the whole
machine is short of, or contention that costs less than the slots bring. Cut on
such latency, a bulkhead is walked down to one slot while the service fails the
calls it refuses (``costly``).

Pure: no clock, no I/O; time arrives as ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from surgeguard_controller.algorithms import Sample
from surgeguard_controller.text import ms


@dataclass(frozen=True)
class Cut:
    before: int  # the knob's value before the cut
    latency_s: float  # the knob's latency signal that asked for the cut, seconds
    at: float = -math.inf  # when it was cut, seconds (monotonic)
    throughput_per_s: float = math.nan  # the work it let through then (per second)


# A bulkhead's cuts are judged by the calls they cost once they add up to this share
# of its slots (a smaller cut's effect is within a tick's noise)...
COSTLY_FROM = 0.2
# ...and were costly when the calls completed fell by at least this share of the cut:
# a saturated dependency completes as many calls with fewer slots (none lost), one
# whose slots were all working completes fewer in proportion.
COSTLY_EVIDENCE = 0.5


@dataclass(frozen=True)
class CutHistory:
    """One knob's recent cuts for latency, oldest first. ``value``: what the knob should
    read now (the last cut's result, or where it went back to), since ``moved_at``
    (seconds). ``held_until``: after going back, no cut for latency before this time
    (seconds)."""

    value: int
    cuts: tuple[Cut, ...] = ()
    moved_at: float = -math.inf
    held_until: float = -math.inf

    def held(self, now: float) -> bool:
        return now < self.held_until

    def applies(self, limit: int, *, now: float, wait_s: float) -> bool:
        """The knob reads what we left it at, or our move may still be on its way
        (less than ``wait_s`` seconds ago). Else someone else moved it (an operator),
        or our move never arrived: this history is not the knob's any more."""
        return limit == self.value or now - self.moved_at < wait_s


def for_latency(sample: Sample) -> bool:
    """The knob's latency over its target is the reason to cut, not another sign
    (errors, timeouts, Little's law): only such cuts can be judged by the latency."""
    return (
        not sample.overloaded
        and not math.isnan(sample.latency_s)
        and sample.latency_s > sample.target_s
    )


def after_cut(
    history: CutHistory | None, sample: Sample, new: int, *, now: float, keep: int
) -> CutHistory:
    """The history once ``sample.limit -> new`` is applied for latency; the newest
    ``keep`` cuts are kept."""
    earlier = history.cuts if history is not None else ()
    cut = Cut(sample.limit, sample.latency_s, now, sample.throughput_per_s)
    cuts = (*earlier, cut)[-keep:]
    return CutHistory(value=new, cuts=cuts, moved_at=now)


def futile(
    history: CutHistory,
    sample: Sample,
    *,
    now: float,
    cuts: int,
    margin: float,
    wait_s: float,
    window_s: float = 1.0,
) -> Cut | None:
    """The first of the last ``cuts`` cuts when none of them lowered the latency by at
    least ``margin`` (0..1): each one's latency is compared with the latency that asked
    for the next one (the last one's with the latency now, ``wait_s`` seconds or more
    after it). None while the knob is not where the last cut left it. One cut seen not
    to help is not enough: at the start of a burst the latency still rises after the
    first cut while the traffic arrives.

    A cut is judged only once its effect can show: the requests admitted before it
    finish within about the latency that asked for it, and the signal is a window of
    ``window_s`` seconds after that. A later reading sooner than that says nothing
    about the cut (measured: a db-bound burst with 5 s bulkhead waits had its first
    cut judged futile 2 s after it and the limit put back mid-burst)."""
    if len(history.cuts) < cuts or now - history.moved_at < wait_s or sample.limit != history.value:
        return None
    judged = history.cuts[-cuts:]
    later = [(c.latency_s, c.at) for c in judged[1:]] + [(sample.latency_s, now)]
    for cut, (latency_s, at) in zip(judged, later, strict=True):
        # (Not ``wait_s`` here: the cool-down already spaces the cuts; what matters is
        # whether this cut's own effect could show in the reading.)
        if at - cut.at < cut.latency_s + window_s:
            return None  # too soon to tell
        if latency_s <= cut.latency_s * (1 - margin):
            return None  # this cut helped
    return judged[0]


def costly(
    history: CutHistory, sample: Sample, *, now: float, wait_s: float, window_s: float = 1.0
) -> Cut | None:
    """The first of the cuts kept when together they cost the work they were to
    protect: at least ``COSTLY_FROM`` of the slots cut, the knob still turning work
    away, and the work it lets through (``sample.throughput_per_s``) down by at least
    ``COSTLY_EVIDENCE`` of the cut from before the first. Judged once the last cut's
    effect can show (as in ``futile``); None otherwise, or without a throughput."""
    if not history.cuts or now - history.moved_at < wait_s or sample.limit != history.value:
        return None
    first, last = history.cuts[0], history.cuts[-1]
    share = 1.0 - history.value / first.before
    before, after = first.throughput_per_s, sample.throughput_per_s
    if (
        share < COSTLY_FROM
        or not sample.refusing
        or math.isnan(before)
        or math.isnan(after)
        or before <= 0
        or now - last.at < last.latency_s + window_s
    ):
        return None
    return first if after <= before * (1.0 - COSTLY_EVIDENCE * share) else None


def costly_reason(history: CutHistory, to: Cut, sample: Sample, *, hold_s: float) -> str:
    """``"cuts 7 -> 3 cost db 58% of its calls (210/s -> 88/s) while it refused
    more: its slots were working, not queueing; back to 7, no cut for latency for
    30 s"``."""
    lost = 1.0 - sample.throughput_per_s / to.throughput_per_s
    name = sample.signal_label.removesuffix(" p99")
    return (
        f"cuts {to.before} -> {history.value} cost {name} {lost:.0%} of its calls "
        f"({to.throughput_per_s:,.0f}/s -> {sample.throughput_per_s:,.0f}/s) while it "
        f"refused more: its slots were working, not queueing; back to {to.before}, "
        f"no cut for latency for {hold_s:g} s"
    )


def gone_back(value: int, *, now: float, hold_s: float) -> CutHistory:
    """The history once the knob is back at ``value``: no cuts to judge, held for
    ``hold_s`` seconds."""
    return CutHistory(value=value, moved_at=now, held_until=now + hold_s)


def back_reason(history: CutHistory, to: Cut, sample: Sample, *, cuts: int, hold_s: float) -> str:
    """``"2 cuts 52 -> 38 did not lower p99 (412 ms -> 405 ms): back to 52, no cut
    for latency for 30 s"``."""
    return (
        f"{cuts} cuts {to.before} -> {history.value} did not lower {sample.signal_label} "
        f"({ms(to.latency_s)} -> {ms(sample.latency_s)}): back to {to.before}, "
        f"no cut for latency for {hold_s:g} s"
    )


def held_reason(history: CutHistory, sample: Sample, knob: str, *, now: float) -> str:
    """``"p99 405 ms > target 200 ms, but cutting concurrency_limit did not lower it:
    holding 52 (24 s before it may be cut again)"``."""
    return (
        f"{sample.over()}, but cutting {knob} did not lower it: holding {sample.limit} "
        f"({history.held_until - now:.0f} s before it may be cut again)"
    )
