"""``surgeguard load --tune``: what the controller converged to during a ``step`` run,
and where the capacity knee is. Pure: one-second windows and knob samples in, a
table and the settings for a static deployment out.

Each stair is judged on its second half (the controller has had the first half to
react). The knee is the first stair where the service turned more than 5% of the
offered load away, or let the admitted p99 past the SLO: below it more users bought
more goodput, from it on they bought rejections. The recommended knobs are the medians
of the *best* stair's second half: the one with the most goodput within the SLO, where
the controller had found the settings that serve the most. The last stair's knobs are
reported too; they are the answer to the heaviest load, which on a machine shared with
the load generator is often the answer to a starved CPU rather than to the service.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from surgeguard_loadtest.load.watch import Window
from surgeguard_loadtest.scenarios import Scenario

SHED_SHARE = 0.05  # more than this share of the offered load turned away: past the knee
ENV_OF_KNOB = {
    "concurrency_limit": "SURGEGUARD_CONCURRENCY_LIMIT",
    "queue_limit": "SURGEGUARD_QUEUE_LIMIT",
    "queue_timeout_ms": "SURGEGUARD_QUEUE_TIMEOUT_MS",
}


@dataclass(frozen=True)
class Stair:
    """One stair's settled half. Rates per second, latency in ms."""

    number: int
    users: int
    offered_per_s: float
    admitted_per_s: float
    good_per_s: float
    shed_share: float
    p99_ms: float | None
    knobs: Mapping[str, float]


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 1) if values else 0.0


def stairs(
    scenario: Scenario,
    windows: Sequence[Window],
    knob_samples: Sequence[tuple[float, Mapping[str, float]]],
) -> list[Stair]:
    out = []
    start = 0.0
    for number, stage in enumerate(scenario.stages, start=1):
        settled_from = start + (stage.until_s - start) / 2
        ws = [w for w in windows if settled_from < w.at <= stage.until_s]
        ks = [k for at, k in knob_samples if settled_from < at <= stage.until_s]
        offered = _median([w.offered_per_s for w in ws])
        rejected = _median([w.rejected_per_s for w in ws])
        p99s = [w.p99_ms for w in ws if w.p99_ms is not None]
        names = sorted({n for k in ks for n in k})
        out.append(
            Stair(
                number=number,
                users=stage.users,
                offered_per_s=offered,
                admitted_per_s=_median([w.admitted_per_s for w in ws]),
                good_per_s=_median([w.good_per_s for w in ws]),
                shed_share=round(rejected / offered, 3) if offered else 0.0,
                p99_ms=_median(p99s) if p99s else None,
                knobs={n: _median([k[n] for k in ks if n in k]) for n in names},
            )
        )
        start = stage.until_s
    return out


def setting_line(knob: str, value: float) -> str:
    """How to fix ``knob`` at ``value`` in a deployment without the controller: a
    variable where the replica reads one at start, else a pinned control-plane value."""
    if knob in ENV_OF_KNOB:
        return f"{ENV_OF_KNOB[knob]}={round(value)}"
    return (
        f"PUT /api/v1/knobs/{knob} "
        f'{{"value": {round(value)}, "pin": true, "reason": "tuned by load --tune"}}'
    )


def knee(found: Sequence[Stair], slo_ms: float) -> Stair | None:
    """The first stair past the capacity knee (None: the run never reached it)."""
    for stair in found:
        over_slo = stair.p99_ms is not None and stair.p99_ms > slo_ms
        if stair.shed_share > SHED_SHARE or over_slo:
            return stair
    return None


def result(
    scenario: Scenario,
    windows: Sequence[Window],
    knob_samples: Sequence[tuple[float, Mapping[str, float]]],
    slo_ms: float,
) -> dict[str, Any]:
    found = stairs(scenario, windows, knob_samples)
    past = knee(found, slo_ms)
    below = next((s for s in reversed(found) if past is None or s.number < past.number), None)
    within = [s for s in found if s.p99_ms is None or s.p99_ms <= slo_ms] or found
    best = max(within, key=lambda s: s.good_per_s, default=None)
    converged = dict(best.knobs) if best else {}
    capacity = max((s.good_per_s for s in found), default=0.0)
    return {
        "slo_p99_ms": slo_ms,
        "capacity_good_per_s": capacity,
        "knee": None
        if past is None
        else {
            "between_users": [below.users if below else 0, past.users],
            "offered_per_s": past.offered_per_s,
            "admitted_per_s": past.admitted_per_s,
            "shed_share": past.shed_share,
        },
        "best_stair": best.number if best else None,
        "converged": converged,
        "last_stair_knobs": dict(found[-1].knobs) if found else {},
        "static_settings": [setting_line(k, v) for k, v in sorted(converged.items())],
        "stairs": [s.__dict__ | {"knobs": dict(s.knobs)} for s in found],
    }


def report(tuned: Mapping[str, Any]) -> str:
    """The result as text for the terminal (and tune.md)."""
    lines = [
        f"{'stair':>5} {'users':>6} {'offered/s':>10} {'admitted/s':>10} {'good/s':>8} "
        f"{'shed':>6} {'p99 ms':>7}  knobs"
    ]
    for s in tuned["stairs"]:
        p99 = "-" if s["p99_ms"] is None else f"{s['p99_ms']:.0f}"
        knobs = ", ".join(f"{k}={v:g}" for k, v in s["knobs"].items())
        lines.append(
            f"{s['number']:>5} {s['users']:>6} {s['offered_per_s']:>10.0f} "
            f"{s['admitted_per_s']:>10.0f} {s['good_per_s']:>8.0f} {s['shed_share']:>6.0%} "
            f"{p99:>7}  {knobs}"
        )
    lines.append("")
    lines.append(f"capacity: about {tuned['capacity_good_per_s']:.0f} good requests/s")
    k = tuned["knee"]
    if k is None:
        lines.append("knee: not reached (no stair shed more than 5% or broke the SLO)")
    else:
        low, high = k["between_users"]
        lines.append(
            f"knee: between {low} and {high} users (at {high} users {k['shed_share']:.0%} "
            f"of {k['offered_per_s']:.0f} req/s offered was turned away)"
        )
    if tuned["static_settings"]:
        lines.append(
            f"for a static deployment (the knobs of stair {tuned['best_stair']}, "
            "the most goodput within the SLO):"
        )
        lines += [f"  {line}" for line in tuned["static_settings"]]
    else:
        lines.append("no knob samples: was the controller reachable?")
    return "\n".join(lines)
