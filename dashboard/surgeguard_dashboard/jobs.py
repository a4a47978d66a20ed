"""The deferred work on the dashboard: per stream its backlog and lag, and the dead
letters. Pure: history in, a Plotly figure out.

A colour per stream (backlog solid, lag dotted in the same colour); never red, which is
the dead letters' (dashed, thicker): a backlog of 4 must not read as 4 dead letters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from surgeguard_dashboard.drills import Drill
from surgeguard_dashboard.model import Signals, Tick
from surgeguard_dashboard.timeplot import layout, mark_drills, x_ms

STREAM_COLOURS = ("#4c78a8", "#54a24b", "#b279a2", "#9d755d", "#17becf", "#bcbd22")
DEAD_LETTERS = ("#d62728", "dash")  # (colour, dash)


def jobs_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """Per stream: backlog (jobs not yet acknowledged) and lag (age of the oldest, on a
    second axis); and the dead letters. Every replica reports the same shared streams,
    so "all replicas" takes the largest report, not the sum."""
    x = x_ms(ticks, offset_s)

    def views(t: Tick) -> list[Signals]:
        seen = [t.replicas.get(replica)] if replica is not None else list(t.replicas.values())
        return [v for v in seen if v is not None]

    def largest(t: Tick, read: Callable[[Signals], float]) -> float:
        values = [read(v) for v in views(t)]
        return max((v for v in values if not math.isnan(v)), default=math.nan)

    def series(read: Callable[[Signals], float]) -> Any:
        return np.fromiter((largest(t, read) for t in ticks), float, len(ticks))

    streams = sorted({s for t in ticks for v in t.replicas.values() for s in v.jobs_pending})
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for n, stream in enumerate(streams):
        label = stream.rsplit(":", 1)[-1]
        colour = STREAM_COLOURS[n % len(STREAM_COLOURS)]
        backlog = go.Scatter(
            x=x,
            y=series(_per_stream("jobs_pending", stream)),
            name=f"backlog: {label}",
            uid=stream,
            mode="lines",
            line={"color": colour, "dash": "solid"},
        )
        lag = go.Scatter(
            x=x,
            y=series(_per_stream("jobs_lag_s", stream)),
            name=f"lag: {label}, s",
            uid=f"lag:{stream}",
            mode="lines",
            line={"color": colour, "dash": "dot"},
        )
        fig.add_trace(backlog, secondary_y=False)
        fig.add_trace(lag, secondary_y=True)
    dead = go.Scatter(
        x=x,
        y=series(_dead_letters),
        name="dead letters",
        uid="dead",
        mode="lines",
        line={"color": DEAD_LETTERS[0], "dash": DEAD_LETTERS[1], "width": 2.5},
    )
    fig.add_trace(dead, secondary_y=False)
    mark_drills(fig, ticks, drills, offset_s)
    fig.update_yaxes(title_text="jobs", secondary_y=False)
    fig.update_yaxes(title_text="lag, s", secondary_y=True, showgrid=False)
    return layout(fig, "jobs", "Jobs: backlog, lag and dead letters", height=280)


def _per_stream(field: str, stream: str) -> Callable[[Signals], float]:
    def read(v: Signals) -> float:
        values: Mapping[str, float] = getattr(v, field)
        return values.get(stream, math.nan)

    return read


def _dead_letters(v: Signals) -> float:
    return v.jobs_dead
