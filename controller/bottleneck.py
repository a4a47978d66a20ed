"""Naming the bottleneck: which dependency (or the door itself) limits the replica now."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.signals import Signals
from controller.text import ms


@dataclass(frozen=True)
class Bottleneck:
    name: str  # a dependency, "admission", or "none"
    sentence: str
    scores: Mapping[str, float] = field(default_factory=dict)


def name_bottleneck(
    s: Signals, baseline_of: Callable[[str], float], inflation: float
) -> Bottleneck:
    """The dependency with the highest utilisation x latency inflation over its healthy
    baseline (seconds, from ``baseline_of``) when it is busy (>= 80%) or inflated
    (>= ``inflation``); else "admission" when requests wait or are turned away;
    else "none"."""
    scores: dict[str, float] = {}
    sentences: dict[str, str] = {}
    for name, d in s.dependencies.items():
        baseline = baseline_of(name)
        inflation = d.p99_s / baseline if baseline > 0 and not math.isnan(d.p99_s) else 1.0
        scores[name] = d.utilisation * max(1.0, inflation)
        sentences[name] = (
            f"{name}: {d.utilisation:.0%} of its {d.limit:.0f} slots busy, "
            f"p99 {ms(d.p99_s)} = "
            f"{inflation:.1f}x its healthy {ms(baseline) if baseline > 0 else 'n/a'}"
        )
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
