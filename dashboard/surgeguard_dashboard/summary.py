"""What the page says at a glance, computed from the data: pure functions, no Streamlit.

SLO state: "violated" while the admitted p99 is over the SLO; "at risk" while it is
within ``RISK_SHARE`` of it, or was over it in the last ``RECENT_S`` seconds (one good
window after a breach is not yet recovery); else "met"; "no data" without traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from surgeguard_dashboard.model import Signals, State, Tick

RISK_SHARE = 0.8  # p99 above this share of the SLO is "at risk"
RECENT_S = 30.0  # seconds a breach keeps the state at "at risk" at least
STALE_TICKS = 3.0  # a replica unread for this many ticks is called stale

SLO_STATES = ("met", "at risk", "violated", "no data")

# Bottlenecks the controller names that are not a dependency, as an operator reads them
# (a dependency is named by its own name). "rejection_work": the replica's CPU is spent
# saying no to clients that do not wait, so a smaller limit cannot help.
BOTTLENECK_LABELS = {
    "rejection_work": "rejection work",
    "cpu": "CPU",
    "admission": "admission",
    "none": "none",
}


def bottleneck_label(name: str) -> str:
    return BOTTLENECK_LABELS.get(name, name)


def slo_state(p99_s: float, slo_s: float, recent_p99_s: Sequence[float] = ()) -> str:
    """One of ``SLO_STATES``; ``recent_p99_s``: the p99 of the last ``RECENT_S`` seconds."""
    return slo_verdict(p99_s, slo_s, recent_p99_s)[0]


def slo_verdict(p99_s: float, slo_s: float, recent_p99_s: Sequence[float] = ()) -> tuple[str, str]:
    """(one of ``SLO_STATES``, why in a few words)."""
    if math.isnan(p99_s) or not slo_s > 0:
        return "no data", "no admitted traffic in the last window"
    if p99_s > slo_s:
        return "violated", "the admitted p99 is over the SLO"
    if p99_s > RISK_SHARE * slo_s:
        return "at risk", f"the admitted p99 is above {RISK_SHARE:.0%} of the SLO"
    if any(p > slo_s for p in recent_p99_s if not math.isnan(p)):
        return "at risk", f"the admitted p99 was over the SLO in the last {RECENT_S:.0f} s"
    return "met", f"the admitted p99 is under {RISK_SHARE:.0%} of the SLO"


def share(part: float, whole: float) -> float:
    """``part / whole`` (0..1), NaN when there is no whole."""
    return part / whole if whole > 0 and not math.isnan(part) else math.nan


@dataclass(frozen=True)
class Status:
    slo: str  # one of SLO_STATES
    slo_why: str
    p99_s: float
    slo_s: float
    goodput_per_s: float  # admitted, answered fine, inside the SLO
    good_share: float  # of all offered requests, 0..1
    rejection_share: float  # of all offered requests, 0..1
    offered_per_s: float
    autopilot: bool
    modes: tuple[str, ...]
    bottleneck: str  # the controller's name ("db", "rejection_work", ...)
    sentence: str
    stale_replicas: tuple[str, ...]
    penalty_held: float = math.nan  # requests held now (came back before Retry-After)
    penalty_holds_per_s: float = math.nan
    rejected_by_reason: tuple[tuple[str, float], ...] = ()  # largest first, per second

    @property
    def bottleneck_label(self) -> str:
        return bottleneck_label(self.bottleneck)


def status(state: State, ticks: Sequence[Tick], replica: str | None) -> Status:
    """The status strip for one replica (``None``: all of them)."""
    signals = state.signals(replica) or Signals()
    last = ticks[-1].at if ticks else math.nan
    recent = [
        s.p99_s for t in ticks if t.at >= last - RECENT_S and (s := t.signals(replica)) is not None
    ]
    offered = signals.offered_per_s
    limit_s = STALE_TICKS * (state.tick_s if state.tick_s > 0 else 1.0)
    stale = tuple(
        sorted(
            r
            for r, v in state.replicas.items()
            if v.signals.stale or state.staleness_s.get(r, 0.0) > limit_s
        )
    )
    verdict, why = slo_verdict(signals.p99_s, state.slo_s, recent)
    return Status(
        slo=verdict,
        slo_why=why,
        p99_s=signals.p99_s,
        slo_s=state.slo_s,
        goodput_per_s=signals.good_per_s,
        good_share=share(signals.good_per_s, offered),
        rejection_share=share(signals.rejected_total_per_s, offered),
        offered_per_s=offered,
        autopilot=state.control.autopilot,
        modes=tuple(sorted(state.control.modes)),
        bottleneck=state.bottleneck.name,
        sentence=state.bottleneck.sentence,
        stale_replicas=stale,
        penalty_held=signals.penalty_held,
        penalty_holds_per_s=signals.penalty_holds_per_s,
        rejected_by_reason=tuple(rejections_by_reason(signals)),
    )


def rejections_by_reason(signals: Signals | None) -> list[tuple[str, float]]:
    """(reason, rejections/s) of one window, largest first; reasons with none left out."""
    if signals is None:
        return []
    found = [(r, v) for r, v in signals.rejected_per_s.items() if v > 0 and not math.isnan(v)]
    return sorted(found, key=lambda rv: (-rv[1], rv[0]))


@dataclass(frozen=True)
class ModeSpan:
    """A degradation mode was on from ``start`` to ``end`` (unix seconds)."""

    mode: str
    start: float
    end: float


def mode_spans(ticks: Sequence[Tick]) -> list[ModeSpan]:
    """Where each mode was on, as spans over the ticks, in order of start. A span ends
    at the first tick without the mode (or at the last tick while it is still on)."""
    spans: list[ModeSpan] = []
    open_at: dict[str, float] = {}
    for tick in ticks:
        for mode in sorted(tick.modes - open_at.keys()):
            open_at[mode] = tick.at
        for mode in sorted(open_at.keys() - tick.modes):
            spans.append(ModeSpan(mode, open_at.pop(mode), tick.at))
    if ticks:
        spans += [ModeSpan(m, start, ticks[-1].at) for m, start in sorted(open_at.items())]
    return sorted(spans, key=lambda s: (s.start, s.mode))


def inflation(
    signals: Signals, ticks: Sequence[Tick], replica: str | None, scores: Mapping[str, float]
) -> dict[str, float]:
    """Per dependency, its p99 over its healthy baseline (1 = healthy).

    The controller's own numbers where it gave them (``scores`` = utilisation x
    inflation, for the view it scored); otherwise the p99 now over the lowest p99 of
    the window (the controller's rule, from what history keeps). NaN: no data."""
    result: dict[str, float] = {}
    for name, dep in signals.dependencies.items():
        score = scores.get(name, math.nan)
        if dep.utilisation > 0 and not math.isnan(score):
            result[name] = max(1.0, score / dep.utilisation)
            continue
        lows = [
            d.p99_s
            for t in ticks
            if (s := t.signals(replica)) is not None
            and (d := s.dependencies.get(name)) is not None
            and d.p99_s > 0
        ]
        low = min(lows, default=math.nan)
        result[name] = dep.p99_s / low if low > 0 and not math.isnan(dep.p99_s) else math.nan
    return result


def worst_dependency(
    signals: Signals, inflation_by_dep: Mapping[str, float], named: str
) -> str | None:
    """The controller's named bottleneck when it is a dependency; else the dependency
    with the highest utilisation x inflation (None when all are idle)."""
    if named in signals.dependencies:
        return named
    scores = {
        n: d.utilisation * _at_least_one(inflation_by_dep.get(n, math.nan))
        for n, d in signals.dependencies.items()
        if not math.isnan(d.utilisation)
    }
    worst = max(scores, key=lambda n: scores[n], default=None)
    return worst if worst is not None and scores[worst] > 0 else None


def _at_least_one(value: float) -> float:
    return 1.0 if math.isnan(value) else max(1.0, value)
