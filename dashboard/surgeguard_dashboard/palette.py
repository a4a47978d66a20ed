"""One colour (and dash) per series, fixed, so a series reads the same on every chart and
no two series of a chart look alike. Pure constants and lookups.

A dependency has one colour everywhere (its bulkhead knob, its band when it is the
bottleneck); knobs are told apart by colour and by dash (limits of requests solid,
bulkheads dashed); a name no list knows gets a spare colour chosen from its name, so it
keeps that colour from refresh to refresh.
"""

from __future__ import annotations

import zlib

DEPENDENCY_COLOURS = {
    "db": "#4c78a8",
    "cache": "#72b7b2",
    "recommendations": "#b279a2",
    "payments": "#9d755d",
}
SPARE_COLOURS = ("#17becf", "#bcbd22", "#8c564b", "#e377c2", "#aec7e8", "#ffbb78", "#98df8a")

# Knob -> (colour, dash). Bulkheads: their dependency's colour, dashed.
KNOB_STYLES = {
    "concurrency_limit": ("#1f3b73", "solid"),
    "queue_limit": ("#f58518", "solid"),
    "queue_timeout_ms": ("#eeca3b", "dot"),
}
BULKHEAD_PREFIX = "bulkhead."

# Bottleneck names that are not a dependency; "none" is drawn as no band at all.
BOTTLENECK_COLOURS = {
    "cpu": "#f58518",
    "rejection_work": "#54278f",
    "admission": "#eeca3b",
    "none": "#d9d9d9",
}


def spare_colour(name: str) -> str:
    return SPARE_COLOURS[zlib.crc32(name.encode()) % len(SPARE_COLOURS)]


def dependency_colour(name: str) -> str:
    return DEPENDENCY_COLOURS.get(name) or spare_colour(name)


def knob_style(knob: str) -> tuple[str, str]:
    """(colour, dash) of a knob's line."""
    if knob in KNOB_STYLES:
        return KNOB_STYLES[knob]
    if knob.startswith(BULKHEAD_PREFIX):
        return dependency_colour(knob.removeprefix(BULKHEAD_PREFIX)), "dash"
    return spare_colour(knob), "dashdot"


def bottleneck_colour(name: str) -> str:
    return BOTTLENECK_COLOURS.get(name) or dependency_colour(name)
