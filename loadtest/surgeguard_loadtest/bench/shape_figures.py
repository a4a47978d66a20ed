"""The square wave's and the drift's own figures, from one-second windows. Pure.

A window is a dict with ``at`` (its end, seconds on the shape's clock), ``limit``
(the limit enforced then, requests), ``p50_ms`` (None without traffic).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

ON_SETTLE_S = 2.0  # an "on" phase's first seconds are the step itself, not steadiness
END_WINDOWS = 5  # the drift's last windows: where the limit and latency ended up
CREEP = 1.5  # p50 this many times the pre-drift one after recovery: the baseline crept
BACK = 0.9  # the limit is back once at this share of its pre-drift value

Window = Mapping[str, Any]


def _limits(windows: Sequence[Window]) -> list[float]:
    return [float(w["limit"]) for w in windows if isinstance(w.get("limit"), int | float)]


def limit_steadiness(
    windows: Sequence[Window], on_spans: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """How still the limit stays through a square wave. ``on_spans``: each "on"
    phase's (start, end] in seconds. ``limit_sd_on``: the standard deviation of the
    limit over the "on" phases' windows past their first ``ON_SETTLE_S`` (requests);
    ``largest_move``: the largest change between two windows in a row from the first
    "on" on (requests), and ``largest_move_share`` its share of the limit's range over
    those windows (``limit_range``: lowest, highest; 0 when the limit never moved)."""
    settled = [
        w for w in windows if any(start + ON_SETTLE_S < w["at"] <= end for start, end in on_spans)
    ]
    on_limits = _limits(settled)
    first = min((start for start, _ in on_spans), default=0.0)
    limits = _limits([w for w in windows if w["at"] > first])
    moves = [abs(b - a) for a, b in itertools.pairwise(limits)]
    low, high = (min(limits), max(limits)) if limits else (None, None)
    largest = max(moves, default=0.0)
    span = (high - low) if low is not None and high is not None else 0.0
    return {
        "limit_sd_on": round(statistics.pstdev(on_limits), 2) if len(on_limits) > 1 else None,
        "largest_move": round(largest, 1),
        "largest_move_share": round(largest / span, 3) if span > 0 else 0.0,
        "limit_range": [low, high],
    }


def drift_recovery(
    windows: Sequence[Window], drift_at: float, recovered_at: float
) -> dict[str, Any]:
    """How the limit followed a dependency that slowed down from ``drift_at`` and was
    back to normal at ``recovered_at`` (seconds on the windows' clock).

    ``limit_before``: the median limit over the 5 s before the drift (requests);
    ``limit_min``: the lowest while slow; ``recovery_s``: seconds from the recovery to
    the first window with the limit back at ``BACK`` of ``limit_before`` (0: it never
    left; None: not within the run); ``limit_end_ratio`` and ``p50_end_ratio``: the
    last ``END_WINDOWS`` windows' median limit and admitted p50 over the pre-drift
    ones; ``baseline_crept``: the p50 ended ``CREEP`` times the pre-drift one or more
    (a limiter whose idea of the normal latency rose with the drift holds the latency
    there once the dependency is fast again)."""
    before = [w for w in windows if drift_at - 5.0 < w["at"] <= drift_at]
    slow = [w for w in windows if drift_at < w["at"] <= recovered_at]
    after = [w for w in windows if w["at"] > recovered_at]
    limit_before = _median(_limits(before))
    limit_min = min(_limits(slow), default=None)
    recovery: float | None = None
    if limit_before is not None and limit_min is not None and limit_min >= BACK * limit_before:
        recovery = 0.0
    elif limit_before is not None:
        recovery = next(
            (
                round(w["at"] - recovered_at, 1)
                for w in after
                if isinstance(w.get("limit"), int | float) and w["limit"] >= BACK * limit_before
            ),
            None,
        )
    end = after[-END_WINDOWS:]
    p50_before = _median([w["p50_ms"] for w in before if w.get("p50_ms") is not None])
    p50_end = _median([w["p50_ms"] for w in end if w.get("p50_ms") is not None])
    limit_end = _median(_limits(end))
    p50_ratio = _ratio(p50_end, p50_before)
    return {
        "limit_before": limit_before,
        "limit_min": limit_min,
        "recovery_s": recovery,
        "limit_end_ratio": _ratio(limit_end, limit_before),
        "p50_before_ms": p50_before,
        "p50_end_ms": p50_end,
        "p50_end_ratio": p50_ratio,
        "baseline_crept": None if p50_ratio is None else p50_ratio >= CREEP,
    }


def _median(values: Sequence[float]) -> float | None:
    return round(float(statistics.median(values)), 1) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None
