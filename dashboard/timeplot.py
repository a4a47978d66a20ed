"""What every time chart shares: its x and y arrays, its layout, the shaded spans of
degradation modes and the bands of load-test drills. Pure: data in, arrays or figure
updates out.

Times are unix seconds shifted by ``offset_s`` (the viewer's offset from UTC) and drawn
as dates, in milliseconds; values are NumPy arrays (far faster to serialise than lists of
datetimes). ``replica=None`` means all replicas (the controller's aggregate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]

from dashboard.drills import Drill, band_layout, drill_spans
from dashboard.model import Signals, Tick
from dashboard.summary import mode_spans

MODE_COLOURS = {
    "shed_sheddable": "#f58518",
    "recommendations_off": "#b279a2",
    "serve_stale": "#72b7b2",
    "read_only": "#e45756",
}
LIMIT_COLOUR = "#7f7f7f"


def x_ms(ticks: Sequence[Tick], offset_s: float) -> np.ndarray:
    """Tick times as milliseconds since the epoch, shifted to the viewer's zone."""
    return np.fromiter(((t.at + offset_s) * 1000.0 for t in ticks), float, len(ticks))


def series(
    ticks: Sequence[Tick], replica: str | None, get: Callable[[Signals], float]
) -> np.ndarray:
    """``get`` of each tick's signals; NaN (a gap, not a zero) where a replica is stale
    or missing."""

    def value(t: Tick) -> float:
        s = t.signals(replica)
        return get(s) if s is not None and not s.stale else math.nan

    return np.fromiter((value(t) for t in ticks), float, len(ticks))


def layout(fig: go.Figure, key: str, title: str, height: int = 320) -> go.Figure:
    """Title, fixed ``uirevision`` (``key``), height, legend below, date x axis."""
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 14}},
        uirevision=key,
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
        hovermode="x unified",
    )
    fig.update_xaxes(type="date")
    fig.update_yaxes(rangemode="tozero")
    return fig


def shade_modes(fig: go.Figure, ticks: Sequence[Tick], offset_s: float) -> None:
    """A shaded span wherever a degradation mode was on (one legend entry per mode).
    Set in one layout update: adding shapes one by one is quadratic in plotly."""
    shapes: list[dict[str, Any]] = []
    seen: set[str] = set()
    for span in mode_spans(ticks):
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": (span.start + offset_s) * 1000.0,
                "x1": (span.end + offset_s) * 1000.0,
                "y0": 0,
                "y1": 1,
                "fillcolor": MODE_COLOURS.get(span.mode, "#bab0ac"),
                "opacity": 0.18,
                "line": {"width": 0},
                "layer": "below",
                "name": f"mode {span.mode}",
                "legendgroup": f"mode {span.mode}",
                "showlegend": span.mode not in seen,
            }
        )
        seen.add(span.mode)
    fig.update_layout(shapes=shapes)


def mark_drills(
    fig: go.Figure, ticks: Sequence[Tick], drills: Sequence[Drill], offset_s: float
) -> None:
    """A labelled band for each load-test drill inside the ticks' span, added to the
    shapes and annotations already there (mode spans, subplot titles)."""
    if not ticks or not drills:
        return
    shapes, labels = band_layout(drill_spans(drills, ticks[0].at, ticks[-1].at), offset_s)
    if shapes:
        fig.update_layout(
            shapes=[*fig.layout.shapes, *shapes], annotations=[*fig.layout.annotations, *labels]
        )
