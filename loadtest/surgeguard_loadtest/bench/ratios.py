"""surgeguard's figures as ratios to the best peer on each column. Pure.

The peers are every policy in the run that is not surgeguard's own (a policy row
with ``"surgeguard": true``). For each column the best peer is the one with the
highest value (goodput, SLO share) or the lowest (latency, time to SLO); a missing
value (never within the SLO, no traffic) is the worst. A ratio is surgeguard's value
over the best peer's: above 1 is better on the first kind, below 1 on the second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DASH = "-"  # a missing value
# (heading, field, higher is better)
COLUMNS = (
    ("goodput/s", "goodput_rps", True),
    ("p99 ms", "p99_ms", False),
    ("p99 ms after 5 s", "p99_ms_settled", False),
    ("1 s windows within SLO", "slo_window_share", True),
    ("time to SLO s", "time_to_slo_s", False),
)

Rows = Mapping[str, Mapping[str, Any]]  # policy name to its row


def _value(row: Mapping[str, Any], field: str) -> float | None:
    v = row.get(field)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def split(rows: Rows) -> tuple[list[str], list[str]]:
    """(surgeguard's policies, the peers), in the rows' order."""
    ours = [name for name, row in rows.items() if row.get("surgeguard")]
    return ours, [name for name in rows if name not in ours]


def best_peers(rows: Rows) -> dict[str, tuple[str, float] | None]:
    """Per column field: (the best peer, its value); None when no peer has a value."""
    _, peers = split(rows)
    out: dict[str, tuple[str, float] | None] = {}
    for _, field, higher in COLUMNS:
        scored = [(v, name) for name in peers if (v := _value(rows[name], field)) is not None]
        if not scored:
            out[field] = None
            continue
        # ties go to the peer listed first
        value, name = (max if higher else min)(scored, key=lambda s: s[0])
        out[field] = (name, value)
    return out


def ratio(ours: float | None, best: float | None) -> float | None:
    """``ours`` over ``best``; None when either is missing or only ``best`` is 0 (a
    ratio would be infinite); 1 when both are 0."""
    if ours is None or best is None:
        return None
    if best == 0:
        return 1.0 if ours == 0 else None
    return round(ours / best, 3)


def ratios(rows: Rows) -> dict[str, dict[str, float | None]]:
    """Per surgeguard policy, per column field: its ratio to the best peer."""
    ours, _ = split(rows)
    best = best_peers(rows)
    return {
        name: {
            field: ratio(_value(rows[name], field), b[1] if (b := best[field]) else None)
            for _, field, _ in COLUMNS
        }
        for name in ours
    }


def markdown(rows: Rows) -> list[str]:
    """The ratio table (one row per surgeguard policy, a row naming the best peers),
    or nothing when the run has no surgeguard policy or no peer."""
    ours, peers = split(rows)
    if not ours or not peers:
        return []
    best = best_peers(rows)
    found = ratios(rows)
    head = [h for h, _, _ in COLUMNS]
    lines = [
        "| surgeguard | " + " | ".join(head) + " |",
        "|---|" + "--:|" * len(COLUMNS),
        "| best peer | "
        + " | ".join(f"{b[0]} ({b[1]:g})" if (b := best[f]) else DASH for _, f, _ in COLUMNS)
        + " |",
    ]
    for name in ours:
        cells = []
        for _, field, _ in COLUMNS:
            r, v = found[name][field], _value(rows[name], field)
            shown = DASH if v is None else f"{v:g}"
            cells.append(f"{shown} (x{r:.2f})" if r is not None else shown)
        # bold: a row of this table is never mistaken for the policy's own row
        lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
    return lines
