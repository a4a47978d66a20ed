"""A policy's row for the square wave and the drift, from one load run (its windows
and the scrapes they came from), and the limit each window enforced.

The spike's row is ``spike.summarize``; these share its fields where they mean the
same (goodput, p99, SLO window share, rejected, errors) and add the shape's own
(``shape_figures``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from surgeguard import metric_names
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import Signals, compute
from surgeguard_loadtest.bench.shape_figures import ON_SETTLE_S, drift_recovery, limit_steadiness
from surgeguard_loadtest.bench.shapes import ShapePlan
from surgeguard_loadtest.load.watch import ms_or_none
from surgeguard_loadtest.scenarios import SQUARE_PRE_S, build

INNER_LIMIT = metric_names.INNER_LIMIT  # gauge: the limit the door enforces now


def nearest(scrapes: Sequence[Scrape], at: float) -> Scrape:
    return min(scrapes, key=lambda s: abs(s.at - at))


def with_enforced_limits(
    windows: Sequence[Mapping[str, Any]], scrapes: Sequence[Scrape]
) -> list[dict[str, Any]]:
    """The windows with ``limit`` the limit enforced at their end: the inner loop's
    where the replica exports one (the knob's then kept as ``knob_limit``), else the
    knob's (requests). Windows and scrapes on the same clock."""
    out = []
    for w in windows:
        row = dict(w)
        if scrapes:
            scrape = nearest(scrapes, w["at"])
            if any(name == INNER_LIMIT for name, _ in scrape.samples):
                row["knob_limit"] = w["limit"]
                row["limit"] = scrape.total(INNER_LIMIT)
        out.append(row)
    return out


def shifted(windows: Sequence[Mapping[str, Any]], zero: float) -> list[dict[str, Any]]:
    """The windows with ``at`` less ``zero`` and ``p99_s`` (the plots' unit)."""
    out = []
    for w in windows:
        p99 = w.get("p99_ms")
        out.append(
            {**w, "at": round(w["at"] - zero, 2), "p99_s": None if p99 is None else p99 / 1000}
        )
    return out


def _over(scrapes: Sequence[Scrape], start: float, end: float, slo_s: float) -> Signals:
    return compute("span", nearest(scrapes, start), nearest(scrapes, end), slo_s=slo_s)


def _common(spans: Sequence[Signals], capacity: float, run: Mapping[str, Any]) -> dict[str, Any]:
    """Goodput (the spans' mean), the worst span's p99, what was rejected and failed."""
    good = statistics.fmean(s.good_per_s for s in spans) if spans else 0.0
    p99s = [s.p99_s for s in spans if s.p99_s == s.p99_s]  # NaN: no traffic
    rejected: dict[str, float] = {}
    for s in spans:
        for reason, per_s in s.rejected_per_s.items():
            rejected[reason] = rejected.get(reason, 0.0) + per_s * s.window_s
    errors = sum(s.error_rate * s.admitted_per_s * s.window_s for s in spans)
    return {
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(statistics.fmean(s.offered_per_s for s in spans), 1) if spans else 0,
        "goodput_rps": round(good, 1),
        "goodput_ratio": round(good / capacity, 3) if capacity else 0.0,
        "p50_ms": ms_or_none(max((s.p50_s for s in spans), default=float("nan"))),
        "p99_ms": ms_or_none(max(p99s, default=float("nan"))),
        "rejected": {k: round(v) for k, v in rejected.items() if v},
        "errors": round(errors),
        "phases": run.get("phases", []),
        "verdicts": run.get("verdicts", []),
        "client_side": {
            **run["client_side"],
            "generator": run["generator"],
            "healthz": run["healthz"],
        },
    }


def _share(windows: Sequence[Mapping[str, Any]], slo_s: float) -> float:
    judged = [w for w in windows if w.get("p99_ms") is not None]
    within = [w for w in judged if w["p99_ms"] <= slo_s * 1000]
    return round(len(within) / len(judged), 3) if judged else 0.0


def square_row(
    run: Mapping[str, Any], plan: ShapePlan, capacity: float, slo_s: float
) -> dict[str, Any]:
    """The square wave's row, on a clock whose 0 is the first "on". Goodput: the mean
    over the "on" phases; p99: the worst "on" phase's; the SLO share: of the "on"
    phases' windows past their first ``ON_SETTLE_S``; the limit's steadiness."""
    scenario = build("square", plan.users, plan.run_s, baseline_users=plan.baseline)
    spans = [(p.start_s, p.end_s) for p in scenario.phase_spans() if p.name.startswith("on")]
    scrapes: list[Scrape] = run["scrapes"]
    windows = shifted(with_enforced_limits(run["windows"], scrapes), SQUARE_PRE_S)
    on = [(a - SQUARE_PRE_S, b - SQUARE_PRE_S) for a, b in spans]
    signals = [_over(scrapes, a, b, slo_s) for a, b in spans] if scrapes else []
    settled = [w for w in windows if any(a + ON_SETTLE_S < w["at"] <= b for a, b in on)]
    return {
        **_common(signals, capacity, run),
        "slo_window_share": _share(settled, slo_s),
        **limit_steadiness(windows, on),
        "on_spans": [list(s) for s in on],
        "windows": windows,
    }


def drift_row(
    run: Mapping[str, Any],
    capacity: float,
    slo_s: float,
    drift_at: float,
    recovered_at: float,
) -> dict[str, Any]:
    """The drift's row, on a clock whose 0 is the drift's start. ``drift_at`` and
    ``recovered_at``: when the db began to slow and was back to normal, seconds on the
    run's clock. Goodput and p99 over the slow part; the SLO share of its windows;
    how the limit followed (``drift_recovery``)."""
    scrapes: list[Scrape] = run["scrapes"]
    windows = shifted(with_enforced_limits(run["windows"], scrapes), drift_at)
    slow_for = round(recovered_at - drift_at, 2)
    signals = [_over(scrapes, drift_at, recovered_at, slo_s)] if scrapes else []
    slow = [w for w in windows if 0 < w["at"] <= slow_for]
    return {
        **_common(signals, capacity, run),
        "slo_window_share": _share(slow, slo_s),
        **drift_recovery(windows, 0.0, slow_for),
        "slow_s": slow_for,
        "windows": windows,
    }
