"""Naming the bottleneck: which dependency (or the door itself, or the CPU) limits the
replica now."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.signals import Signals
from controller.text import ms, share_of_core


@dataclass(frozen=True)
class Bottleneck:
    name: str  # a dependency, "admission", "cpu", "rejection_work", or "none"
    sentence: str
    scores: Mapping[str, float] = field(default_factory=dict)


def cpu_taken_elsewhere(
    s: Signals, *, target_s: float, lag_share: float, cpu_saturated: float
) -> bool:
    """Admitted p99 is over ``target_s`` (seconds), event-loop lag is at least
    ``lag_share`` (0..1) of it, and the replica's process uses less than
    ``cpu_saturated`` cores: the loop waits for a CPU that something else holds, so
    admitting less would not make it wait less. False when any of them is unknown."""
    numbers = (s.p99_s, s.loop_lag_p99_s, s.cpu_utilisation)
    return (
        not any(math.isnan(v) for v in numbers)
        and s.p99_s > target_s
        and s.loop_lag_p99_s >= lag_share * s.p99_s
        and s.cpu_utilisation < cpu_saturated
    )


def cpu_sentence(s: Signals) -> str:
    """Why the CPU, not the admitted work, is the bottleneck (see ``cpu_taken_elsewhere``)."""
    who = "this replica" if s.replica != "all" else "the busiest replica"
    return (
        f"cpu: event-loop lag {ms(s.loop_lag_p99_s)} of p99 {ms(s.p99_s)} with {who} at "
        f"{share_of_core(s.cpu_utilisation)}: another process is taking the CPU "
        f"(a co-located load generator?)"
    )


def door_work_per_s(s: Signals) -> float:
    """Requests per second the door handled without admitting them: rejections, and
    early returns it held in the penalty box (each is parsed and timed, then decided)."""
    return s.rejected_total_per_s + s.penalty_holds_per_s


def rejection_work(
    s: Signals,
    *,
    target_s: float,
    lag_share: float,
    ratio: float,
    min_per_s: float,
    loop_hops: float = 1.0,
) -> bool:
    """Admitted p99 is over ``target_s`` (seconds), the door turns away or holds at
    least ``min_per_s`` requests per second and at least ``ratio`` times as many as it
    admits, and the event-loop lag a request carries (``loop_hops`` x the loop's lag
    p99: a request waits for the loop at each of its hops) is at least ``lag_share``
    (0..1) of the p99: the replica's CPU goes to saying no, so admitting less would
    only add rejections and lower no latency. False when the p99 or the lag is unknown.
    (Issue 11: a retry storm of 14,000 rejections/s left 40/s admitted and the limit
    was cut to 1; at the start of a storm of 10,000 penalised connections, 3,100
    rejections/s and 3,100 holds/s against 216 admitted/s, lag 286 ms, p99 940 ms, cut
    it from 59 to 29 and then 19 with the lag counted once per request.)"""
    if math.isnan(s.p99_s) or math.isnan(s.loop_lag_p99_s):
        return False
    door = door_work_per_s(s)
    return (
        s.p99_s > target_s
        and door >= min_per_s
        and door >= ratio * s.admitted_per_s
        and loop_hops * s.loop_lag_p99_s >= lag_share * s.p99_s
    )


def rejection_numbers(s: Signals) -> str:
    """``"14,000 rejections/s vs 40 admitted/s"`` (with the penalty box's holds, when
    there are any: ``"3,100 rejections/s + 3,100 held/s vs 216 admitted/s"``)."""
    held = f" + {s.penalty_holds_per_s:,.0f} held/s" if s.penalty_holds_per_s >= 1 else ""
    return f"{s.rejected_total_per_s:,.0f} rejections/s{held} vs {s.admitted_per_s:,.0f} admitted/s"


def rejection_sentence(s: Signals) -> str:
    """Why rejection work is the bottleneck (see ``rejection_work``)."""
    return (
        f"rejection work: {rejection_numbers(s)}, loop lag {ms(s.loop_lag_p99_s)} of "
        f"p99 {ms(s.p99_s)}: the CPU is spent saying no"
    )


def name_bottleneck(
    s: Signals,
    baseline_of: Callable[[str], float],
    inflation: float,
    *,
    cpu_elsewhere: bool = False,
    rejecting: bool = False,
) -> Bottleneck:
    """The CPU ("cpu") when ``cpu_elsewhere`` (see ``cpu_taken_elsewhere``): the
    admitted latency is mostly the loop waiting for the CPU, and a dependency looking
    busy then is a symptom. Else "rejection_work" when ``rejecting`` (see
    ``rejection_work``): the loop is busy turning requests away. Else the dependency
    with the highest utilisation x latency inflation over its healthy baseline
    (seconds, from ``baseline_of``) when it is busy (>= 80%) or inflated
    (>= ``inflation``); else "admission" when requests wait or are turned away;
    else "none"."""
    scores: dict[str, float] = {}
    sentences: dict[str, str] = {}
    for name, d in s.dependencies.items():
        baseline = baseline_of(name)
        inflated = d.p99_s / baseline if baseline > 0 and not math.isnan(d.p99_s) else 1.0
        scores[name] = d.utilisation * max(1.0, inflated)
        sentences[name] = (
            f"{name}: {d.utilisation:.0%} of its {d.limit:.0f} slots busy, "
            f"p99 {ms(d.p99_s)} = "
            f"{inflated:.1f}x its healthy {ms(baseline) if baseline > 0 else 'n/a'}"
        )
    if cpu_elsewhere:
        return Bottleneck("cpu", cpu_sentence(s), scores)
    if rejecting:
        return Bottleneck("rejection_work", rejection_sentence(s), scores)
    worst = max(scores, key=lambda n: scores[n], default=None)
    saturated = s.queue_depth > 0 or s.rejected_total_per_s > 0
    limit_use = s.peak_in_flight / s.concurrency_limit if s.concurrency_limit else 0.0
    if worst is not None and (
        s.dependencies[worst].utilisation >= 0.8 or scores[worst] >= inflation
    ):
        return Bottleneck(worst, sentences[worst], scores)
    if saturated:
        return Bottleneck(
            "admission",
            (
                f"admission: {limit_use:.0%} of the limit {s.concurrency_limit:.0f} in use, "
                f"{s.queue_depth:.0f} waiting, {s.rejected_total_per_s:.0f}/s turned away; "
                f"no dependency is saturated"
            ),
            scores,
        )
    return Bottleneck("none", "nothing is saturated", scores)
