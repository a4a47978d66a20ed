"""The history of the bottleneck's name as a band over time: which name the controller
held from when to when. Pure: history in, spans, Plotly shapes or a figure out.

A span starts at the first history point naming it and ends where the next name's span
starts (the last one at the latest point). Every time chart gets a thin strip of these
colours along its top edge (``mark_bottlenecks``); the band chart (``band_figure``)
above the time charts names them, with the controller's sentence on hover. "none" is
drawn on the band chart only. Times are unix seconds; the charts' x axis is
milliseconds, shifted by ``offset_s`` (the viewer's offset from UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]

from surgeguard_dashboard.model import Tick
from surgeguard_dashboard.palette import bottleneck_colour
from surgeguard_dashboard.summary import bottleneck_label
from surgeguard_dashboard.timeplot import layout

STRIP_SHARE = 0.035  # of the plot's height, the strip at the top of every time chart
STRIP_OPACITY = 0.55


@dataclass(frozen=True)
class BottleneckSpan:
    name: str
    start: float  # unix seconds
    end: float
    sentence: str  # the controller's, at the span's first point


def bottleneck_spans(ticks: Sequence[Tick]) -> list[BottleneckSpan]:
    """Consecutive history points with the same bottleneck name, as spans, oldest
    first. A point stands for the time until the next one; the newest for one more
    period (the gap before it), so a name that has just taken over shows at once."""
    spans: list[BottleneckSpan] = []
    for n, tick in enumerate(ticks):
        if n + 1 < len(ticks):
            end = ticks[n + 1].at
        else:
            end = tick.at + (tick.at - ticks[n - 1].at if n > 0 else 1.0)
        name = tick.bottleneck.name
        if spans and spans[-1].name == name:
            last = spans[-1]
            spans[-1] = BottleneckSpan(name, last.start, end, last.sentence)
        else:
            spans.append(BottleneckSpan(name, tick.at, end, tick.bottleneck.sentence))
    return spans


def mark_bottlenecks(fig: go.Figure, ticks: Sequence[Tick], offset_s: float) -> None:
    """A thin strip along the top of the plot, coloured by the bottleneck of the time
    (no colour while there is none), added to the shapes already there."""
    shapes: list[dict[str, Any]] = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": (span.start + offset_s) * 1000.0,
            "x1": (span.end + offset_s) * 1000.0,
            "y0": 1.0 - STRIP_SHARE,
            "y1": 1.0,
            "fillcolor": bottleneck_colour(span.name),
            "opacity": STRIP_OPACITY,
            "line": {"width": 0},
            "layer": "below",
            "name": f"bottleneck {span.name}",
        }
        for span in bottleneck_spans(ticks)
        if span.name != "none" and span.end > span.start
    ]
    if shapes:
        fig.update_layout(shapes=[*fig.layout.shapes, *shapes])


def band_figure(ticks: Sequence[Tick], *, offset_s: float = 0.0) -> go.Figure:
    """One row of coloured spans, one per stretch a name held, named inside the span
    where it fits; hovering gives the name, how long it held and the sentence."""
    spans = [s for s in bottleneck_spans(ticks) if s.end > s.start]
    fig = go.Figure()
    for name in sorted({s.name for s in spans}):
        mine = [s for s in spans if s.name == name]
        label = bottleneck_label(name)
        fig.add_trace(
            go.Bar(
                base=np.array([(s.start + offset_s) * 1000.0 for s in mine], float),
                x=np.array([(s.end - s.start) * 1000.0 for s in mine], float),
                y=["bottleneck"] * len(mine),
                orientation="h",
                name=label,
                uid=f"band:{name}",
                marker={"color": bottleneck_colour(name), "line": {"width": 0}},
                text=[label] * len(mine),
                textposition="inside",
                insidetextanchor="middle",
                customdata=[[f"{s.end - s.start:.0f} s", s.sentence] for s in mine],
                hovertemplate=f"<b>{label}</b> held %{{customdata[0]}}<br>"
                "%{customdata[1]}<extra></extra>",
            )
        )
    fig.update_layout(showlegend=False)
    layout(fig, "bottleneck_band", "Bottleneck over time", height=130)
    fig.update_layout(
        barmode="overlay",
        bargap=0.15,
        hovermode="closest",
        uniformtext={"minsize": 9, "mode": "hide"},  # a name that does not fit is hidden
    )
    fig.update_yaxes(visible=False, rangemode="normal")
    return fig
