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

from surgeguard_dashboard.drills import Drill, band_layout, drill_spans
from surgeguard_dashboard.model import Signals, Tick
from surgeguard_dashboard.summary import mode_spans

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


TITLE_TOP_PX = 6  # the title's top edge, from the figure's top
MARGIN_TOP_PX = 40  # room for the title above the plot
SUBPLOT_MARGIN_TOP_PX = 62  # room for the title and, below it, the first subplot's title
SUBPLOT_TITLE_SIZE = 12
SUBTITLE_PX = 18  # a subtitle's line, below the title
# The legend wraps below the plot; the figure grows by a row of this many pixels per
# this many entries, so the plot keeps its height in a half-width column (where two
# entries fit a row). In a wider column the legend needs fewer rows and the plot gains.
LEGEND_ROW_PX = 22
LEGEND_ENTRIES_PER_ROW = 2


LEGEND_NAME_CHARS = 26  # a longer name takes a row of its own (Plotly's columns are
# as wide as the widest entry)


def legend_names(fig: go.Figure) -> list[str]:
    """The entries the figure's legend will list (none when the legend is off)."""
    if fig.layout.showlegend is False:
        return []
    traces = [str(t.name) for t in fig.data if t.showlegend is not False]
    return traces + [str(s.name) for s in fig.layout.shapes if s.showlegend]


def legend_px(fig: go.Figure) -> int:
    """The height the legend's rows need in a half-width column, pixels."""
    names = legend_names(fig)
    wide = any(len(n) > LEGEND_NAME_CHARS for n in names)
    return LEGEND_ROW_PX * math.ceil(len(names) / (1 if wide else LEGEND_ENTRIES_PER_ROW))


def layout(
    fig: go.Figure,
    key: str,
    title: str,
    height: int = 320,
    *,
    subplots: bool = False,
    subtitle: str = "",
) -> go.Figure:
    """Title, fixed ``uirevision`` (``key``), height (``height`` for the plot and its
    axes, plus the legend's rows), legend below, date x axis.

    Nothing may overlap: the title sits at the very top of the figure, with room below
    it for a first row of subplot titles (``subplots``); the legend is placed against
    the figure's bottom edge (``yref="container"``), which makes Plotly reserve that
    room below the axis, so the legend never covers the tick labels however many rows
    it wraps to. The time axis shows the time of day only (a second line with the date
    ran into the legend); the hover and the page's caption give the date. Every axis
    makes room for its labels (``automargin``)."""
    fig.update_layout(
        title={
            "text": title,
            "x": 0,
            "xanchor": "left",
            "yref": "container",
            "y": 1,
            "yanchor": "top",
            "pad": {"t": TITLE_TOP_PX},
            "font": {"size": 14},
            "subtitle": {"text": subtitle, "font": {"size": 11}},
        },
        uirevision=key,
        height=height + legend_px(fig),
        margin={
            "l": 10,
            "r": 10,
            "t": (SUBPLOT_MARGIN_TOP_PX if subplots else MARGIN_TOP_PX)
            + (SUBTITLE_PX if subtitle else 0),
            "b": 10,
        },
        legend={
            "orientation": "h",
            "xref": "container",  # wraps at the figure's width, not the plot's
            "x": 0,
            "xanchor": "left",
            "yref": "container",
            "y": 0,
            "yanchor": "bottom",
        },
        hovermode="x unified",
    )
    fig.update_xaxes(type="date", tickformat="%H:%M:%S", hoverformat="%Y-%m-%d %H:%M:%S")
    fig.update_yaxes(rangemode="tozero")
    # Room for tick labels and axis titles, whatever the template: Plotly's own
    # template turns this on, Streamlit's (the default once streamlit is imported) not.
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def subplot_titles(fig: go.Figure) -> None:
    """Subplot titles a size below the figure's title, so they fit the room ``layout``
    leaves them (``subplots=True``)."""
    fig.update_annotations(font={"size": SUBPLOT_TITLE_SIZE})


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
