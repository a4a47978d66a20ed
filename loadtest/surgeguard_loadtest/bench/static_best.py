"""The ``static-best`` policy's limit: the best static limit on the same stack, found
by a short sweep before the measured runs.

One replica with no controller and no queue gets the run's heaviest load (the spike's
users) while the benchmark steps its concurrency limit through ``LIMITS`` (a knob
write to the control plane every ``step_s``). Every one-second window reports the
limit in force, so the windows are grouped by it; the first window after a change is
the transition and does not count. The choice is ``surgeguard load --tune``'s rule:
of the limits whose median admitted p99 is within the SLO (all, when none is), the one
with the most median goodput.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from surgeguard_loadtest.bench.timeline import Plane, Timeline

LIMITS = (2, 4, 6, 8, 12, 16, 24, 32, 48)  # requests in flight; the db has 4 slots
QUICK_LIMITS = (2, 4, 6, 8, 12, 16, 32)
LEAD_S = 6.0  # the first limit's extra time: Locust's start and the users' ramp
SLACK_S = 4.0  # more load than the steps need: Locust starts a few seconds late


def by_limit(windows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per limit (requests), the medians of its settled windows: ``good_per_s``,
    ``p99_ms`` (None without traffic) and how many ``windows`` counted. A window counts
    when the one before it had the same limit (the first after a change is the change)."""
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    previous = None
    for w in windows:
        limit = w.get("limit")
        if isinstance(limit, int | float) and limit == previous:
            grouped.setdefault(round(limit), []).append(w)
        previous = limit
    out = {}
    for limit, ws in sorted(grouped.items()):
        p99s = [w["p99_ms"] for w in ws if w.get("p99_ms") is not None]
        out[limit] = {
            "good_per_s": round(statistics.median(w["good_per_s"] for w in ws), 1),
            "p99_ms": round(statistics.median(p99s), 1) if p99s else None,
            "windows": len(ws),
        }
    return out


def best_limit(steps: Mapping[int, Mapping[str, Any]], slo_ms: float) -> int | None:
    """The limit with the most goodput among those within the SLO (all, when none is);
    None without a single settled window."""
    within = [n for n, s in steps.items() if s["p99_ms"] is None or s["p99_ms"] <= slo_ms]
    pool = within or list(steps)
    return max(pool, key=lambda n: (steps[n]["good_per_s"], -n), default=None)


def sweep(
    redis_url: str,
    limits: Sequence[int],
    step_s: float,
    load: Callable[[float], Mapping[str, Any]],
    slo_ms: float,
) -> dict[str, Any]:
    """Runs ``load(seconds)`` (a steady load on a replica started at ``limits[0]``,
    connected to the Redis at ``redis_url``) while stepping the limit, and returns
    ``{"limit": the best, "steps": by_limit(...), "limits": limits}``."""
    plane = Plane(redis_url)
    steps = [
        (LEAD_S + i * step_s, partial(plane.set_knobs, {"concurrency_limit": n}))
        for i, n in enumerate(limits)
        if i > 0  # the replica starts at the first
    ]
    timeline = Timeline(steps)
    timeline.start()
    try:
        run = load(LEAD_S + len(limits) * step_s + SLACK_S)
    finally:
        timeline.stop()
    found = by_limit(run["windows"])
    return {"limit": best_limit(found, slo_ms), "steps": found, "limits": list(limits)}
