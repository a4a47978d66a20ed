"""Futile cuts: a knob cut for latency that did not lower it goes back (issue 11).

A cut is a bet that the knob causes the latency. Each knob keeps a short record of
its cuts for latency (``CutHistory``, frozen: the decider replaces it, never edits
it). When the latency after ``n`` such cuts is no lower than before them, the bet
was lost: the knob returns to its value before them and is held there for a while,
instead of being walked down to its minimum on latency it does not move.

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
    cuts = (*earlier, Cut(sample.limit, sample.latency_s, now))[-keep:]
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
