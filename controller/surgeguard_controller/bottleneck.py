"""Naming the bottleneck: which dependency (or the door itself, or the CPU) limits the
replica now, and a name that holds still (``hold_name``).

Issue 16: the name changed every second (recommendations, db, cache, cpu, db, ...) and
an idle cache whose 2 ms p99 was inflated by the loop's lag was named while db sat at
100%. So a dependency's latency inflation counts only while it is busy or failing, and
is measured without the event loop's lag; a dependency under ``bottleneck_busy`` is
never named while another is at ``bottleneck_saturated`` or more; and a new name
replaces the current one only after the current one has been out of the lead for
``bottleneck_hold_ticks`` ticks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.sensing.signals import DependencySignals, Signals
from surgeguard_controller.text import ms, share_of_core


@dataclass(frozen=True)
class Bottleneck:
    name: str  # a dependency, "admission", "cpu", "rejection_work", or "none"
    sentence: str
    scores: Mapping[str, float] = field(default_factory=dict)
    # Every dependency's sentence this tick (not only the named one's), so a name that
    # is held while another leads still reads with this tick's numbers.
    sentences: Mapping[str, str] = field(default_factory=dict)


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


def cpu_bound(s: Signals, *, target_s: float, lag_share: float, cpu_saturated: float) -> bool:
    """Admitted p99 is over ``target_s`` (seconds), event-loop lag is at least
    ``lag_share`` (0..1) of it, and the replica's own process uses at least
    ``cpu_saturated`` cores: the loop lags behind the replica's own work. False when any
    of them is unknown."""
    numbers = (s.p99_s, s.loop_lag_p99_s, s.cpu_utilisation)
    return (
        not any(math.isnan(v) for v in numbers)
        and s.p99_s > target_s
        and s.loop_lag_p99_s >= lag_share * s.p99_s
        and s.cpu_utilisation >= cpu_saturated
    )


def cpu_bound_sentence(s: Signals) -> str:
    """Why the replica's own CPU is the bottleneck (see ``cpu_bound``)."""
    who = "this replica" if s.replica != "all" else "the busiest replica"
    return (
        f"cpu: event-loop lag {ms(s.loop_lag_p99_s)} of p99 {ms(s.p99_s)} with {who} at "
        f"{share_of_core(s.cpu_utilisation)}: the replica's own work saturates its CPU"
    )


@dataclass(frozen=True)
class Weighed:
    """One dependency weighed for the bottleneck. ``inflation``: its p99 without the
    loop's lag over its healthy baseline (1.0 when either is unknown); ``score``:
    utilisation x inflation, the inflation counted only while ``busy`` or ``failing``."""

    name: str
    utilisation: float
    inflation: float
    inflated: bool  # over max(baseline x inflation, baseline + floor)
    busy: bool  # at least ``bottleneck_busy`` of its slots in use, or calls turned away
    failing: bool  # timeouts or errors over ``failure_threshold``
    score: float
    sentence: str

    @property
    def counts(self) -> bool:
        """Whether its latency inflation speaks for it (an idle dependency's does not)."""
        return self.busy or self.failing


def weigh(d: DependencySignals, baseline_s: float, lag_s: float, c: ControllerConfig) -> Weighed:
    """``baseline_s``: the dependency's healthy latency (seconds, NaN when unknown);
    ``lag_s``: the loop's lag p99 over the window (seconds, NaN when unknown), which
    every awaited call's measured latency includes."""
    lag = lag_s if not math.isnan(lag_s) and lag_s > 0 else 0.0
    known = baseline_s > 0 and not math.isnan(d.p99_s)
    own_s = max(0.0, d.p99_s - lag) if not math.isnan(d.p99_s) else math.nan
    inflation = own_s / baseline_s if known else 1.0
    inflated = known and own_s > max(baseline_s * c.inflation, baseline_s + c.inflation_floor_s)
    busy = d.utilisation >= c.bottleneck_busy or d.rejected_per_s > 0
    failing = max(d.timeout_rate, d.error_rate) > c.failure_threshold
    score = d.utilisation * (max(1.0, inflation) if busy or failing else 1.0)
    without_lag = f" ({ms(own_s)} without the loop's lag)" if known and lag > 0.1 * d.p99_s else ""
    sentence = (
        f"{d.name}: {d.utilisation:.0%} of its {d.limit:.0f} slots busy, "
        f"p99 {ms(d.p99_s)}{without_lag} = "
        f"{inflation:.1f}x its healthy {ms(baseline_s) if baseline_s > 0 else 'n/a'}"
    )
    if inflated and not (busy or failing):
        sentence += ", but idle and not failing: its latency does not count"
    return Weighed(d.name, d.utilisation, inflation, inflated, busy, failing, score, sentence)


def worst_dependency(weighed: Mapping[str, Weighed], c: ControllerConfig) -> str | None:
    """The dependency to name, or None: among those saturated (at least
    ``bottleneck_saturated`` busy) or inflated while busy or failing, the highest score;
    while any is saturated, none under ``bottleneck_busy`` is eligible."""
    saturated = any(w.utilisation >= c.bottleneck_saturated for w in weighed.values())
    eligible = [
        w
        for w in weighed.values()
        if (w.utilisation >= c.bottleneck_saturated or (w.inflated and w.counts))
        and not (saturated and w.utilisation < c.bottleneck_busy)
    ]
    return max(eligible, key=lambda w: w.score).name if eligible else None


def name_bottleneck(
    s: Signals,
    baseline_of: Callable[[str], float],
    config: ControllerConfig,
    *,
    cpu_elsewhere: bool = False,
    rejecting: bool = False,
) -> Bottleneck:
    """This tick's pick, first match wins:

    - "cpu" when ``cpu_elsewhere`` (see ``cpu_taken_elsewhere``): the admitted latency
      is mostly the loop waiting for a CPU another process holds; a dependency looking
      busy then is a symptom;
    - "rejection_work" when ``rejecting`` (see ``rejection_work``): the loop is busy
      turning requests away;
    - "cpu" when the loop lags behind the replica's own saturated CPU (``cpu_bound``);
    - the worst dependency (``worst_dependency``; baselines in seconds from
      ``baseline_of``);
    - "admission" when requests wait or are turned away; else "none"."""
    weighed = {
        name: weigh(d, baseline_of(name), s.loop_lag_p99_s, config)
        for name, d in s.dependencies.items()
    }
    scores = {name: w.score for name, w in weighed.items()}
    sentences = {name: w.sentence for name, w in weighed.items()}

    def named(name: str, sentence: str) -> Bottleneck:
        return Bottleneck(name, sentence, scores, sentences)

    if cpu_elsewhere:
        return named("cpu", cpu_sentence(s))
    if rejecting:
        return named("rejection_work", rejection_sentence(s))
    if cpu_bound(
        s,
        target_s=config.target_s,
        lag_share=config.lag_share,
        cpu_saturated=config.cpu_saturated,
    ):
        return named("cpu", cpu_bound_sentence(s))
    worst = worst_dependency(weighed, config)
    if worst is not None:
        return named(worst, sentences[worst])
    if s.queue_depth > 0 or s.rejected_total_per_s > 0:
        limit_use = s.peak_in_flight / s.concurrency_limit if s.concurrency_limit else 0.0
        return named(
            "admission",
            f"admission: {limit_use:.0%} of the limit {s.concurrency_limit:.0f} in use, "
            f"{s.queue_depth:.0f} waiting, {s.rejected_total_per_s:.0f}/s turned away; "
            f"no dependency is saturated",
        )
    return named("none", "nothing is saturated")


# -- a name that holds still ------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """The bottleneck as the operator sees it. ``since``: unix seconds the name took
    the lead; ``at``: unix seconds of the latest tick; ``behind``: this tick's pick
    and time for each tick since the held name last led (oldest first)."""

    bottleneck: Bottleneck
    since: float
    at: float
    behind: tuple[tuple[Bottleneck, float], ...] = ()

    @property
    def name(self) -> str:
        return self.bottleneck.name

    @property
    def held_s(self) -> float:
        """Seconds the name has held, as of the latest tick."""
        return max(0.0, self.at - self.since)

    @property
    def leading(self) -> str:
        """This tick's own pick (the held name unless another leads now)."""
        return self.behind[-1][0].name if self.behind else self.name


def _successor(behind: tuple[tuple[Bottleneck, float], ...]) -> tuple[Bottleneck, float]:
    """The name picked most often over ``behind`` (ties: the latest), with its latest
    pick and the time it first led in it."""
    counts: dict[str, int] = {}
    for pick, _ in behind:
        counts[pick.name] = counts.get(pick.name, 0) + 1
    best = max(counts.values())
    name = next(p.name for p, _ in reversed(behind) if counts[p.name] == best)
    latest = next(p for p, _ in reversed(behind) if p.name == name)
    first = next(at for p, at in behind if p.name == name)
    return latest, first


def hold_name(state: Held | None, pick: Bottleneck, *, now: float, hold_ticks: int) -> Held:
    """The next ``Held`` after this tick's ``pick`` (``now``: unix seconds). The first
    pick is taken as it is; after that the held name stays until it has been out of the
    lead for ``hold_ticks`` ticks in a row, and is then replaced by the name that led
    most of those ticks. A held name keeps its sentence, with this tick's numbers where
    there are some (a dependency's); every name shows this tick's scores."""
    if state is None:
        return Held(pick, now, now)
    if pick.name == state.name:
        return Held(pick, state.since, now)
    behind = (*state.behind, (pick, now))[-hold_ticks:]
    if len(behind) >= hold_ticks:
        successor, since = _successor(behind)
        return Held(replace(successor, scores=pick.scores, sentences=pick.sentences), since, now)
    old = state.bottleneck
    kept = replace(
        old,
        sentence=pick.sentences.get(old.name, old.sentence),
        scores=pick.scores,
        sentences=pick.sentences,
    )
    return Held(kept, state.since, now, behind)


def held_sentence(held: Held, hold_ticks: int) -> str:
    """The held name's sentence; while another name leads, it says who and how close
    that is to taking over."""
    if not held.behind:
        return held.bottleneck.sentence
    leading = held.leading
    who = "nothing is saturated" if leading == "none" else f"{leading} leads"
    return (
        f"{held.bottleneck.sentence} [held: {who} now, {len(held.behind)} of "
        f"{hold_ticks} ticks out of the lead to change]"
    )


def held_json(held: Held | None, hold_ticks: int) -> dict[str, object]:
    """The state's and each history point's ``bottleneck``: ``since`` in unix seconds
    (null before the first pick), ``held_s`` in seconds, ``leading`` this tick's own
    pick."""
    if held is None:
        return {
            "name": "none",
            "sentence": "no data yet",
            "scores": {},
            "since": None,
            "held_s": 0.0,
            "leading": "none",
        }
    b = held.bottleneck
    return {
        "name": b.name,
        "sentence": held_sentence(held, hold_ticks),
        "scores": {k: v if math.isfinite(v) else None for k, v in b.scores.items()},
        "since": held.since,
        "held_s": round(held.held_s, 3),
        "leading": held.leading,
    }
