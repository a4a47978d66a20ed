"""The columns of the benchmark's table for each shape: (heading, field, format).

One list for the terminal and report.md, so both show the same figures. "rejected"
comes last in report.md and is not listed here (it is a breakdown, not a number).
"""

from __future__ import annotations

Column = tuple[str, str, str]

SPIKE: tuple[Column, ...] = (
    ("goodput/s", "goodput_rps", ",.1f"),
    ("goodput ratio", "goodput_ratio", ".3f"),
    ("p50 ms", "p50_ms", ",.1f"),
    ("p99 ms", "p99_ms", ",.1f"),
    ("p99 ms after 5 s", "p99_ms_settled", ",.1f"),  # once the policy has had time to act
    ("1 s windows within SLO", "slo_window_share", ".2f"),
    ("time to SLO s", "time_to_slo_s", ".1f"),
    ("recovery s", "recovery_s", ".1f"),
    ("errors", "errors", ",.0f"),
)
SQUARE: tuple[Column, ...] = (
    ("goodput/s (on)", "goodput_rps", ",.1f"),
    ("goodput ratio", "goodput_ratio", ".3f"),
    ("worst on p99 ms", "p99_ms", ",.1f"),
    ("1 s windows within SLO (on)", "slo_window_share", ".2f"),
    ("limit sd (on)", "limit_sd_on", ".2f"),
    ("largest move", "largest_move", ",.1f"),
    ("largest move / range", "largest_move_share", ".2f"),
    ("errors", "errors", ",.0f"),
)
DRIFT: tuple[Column, ...] = (
    ("goodput/s (slow)", "goodput_rps", ",.1f"),
    ("p99 ms (slow)", "p99_ms", ",.1f"),
    ("1 s windows within SLO (slow)", "slo_window_share", ".2f"),
    ("limit before", "limit_before", ",.1f"),
    ("limit min", "limit_min", ",.1f"),
    ("recovery s", "recovery_s", ".1f"),
    ("limit end / before", "limit_end_ratio", ".2f"),
    ("p50 end / before", "p50_end_ratio", ".2f"),
    ("errors", "errors", ",.0f"),
)
BY_SHAPE = {"spike": SPIKE, "square": SQUARE, "drift": DRIFT}


def for_shape(shape: object) -> tuple[Column, ...]:
    """The shape's columns; the spike's for a summary without a shape (older ones)."""
    return BY_SHAPE.get(shape if isinstance(shape, str) else "spike", SPIKE)
