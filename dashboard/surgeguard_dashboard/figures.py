"""Plotly figures from the controller's data: pure functions, data in, figure out.

Every time figure marks the load-test drills it spans and shares its axes and layout
(``surgeguard_dashboard.timeplot``); the door's figure is in ``surgeguard_dashboard.door``.
Every figure has a fixed ``uirevision`` and traces with a fixed ``uid`` (so Plotly
keeps zoom and legend clicks wherever the chart is updated in place), fixed heights
and legend places; the x axis is left to autorange so a refresh extends it. (Streamlit
1.67 redraws a chart whose data changed from scratch; ``surgeguard_dashboard.zoom`` holds the
time zoom on the server for that reason.) Times are unix seconds shifted by
``offset_s`` (the viewer's offset from UTC) and drawn as dates; values are NumPy arrays
(far faster to serialise than lists of datetimes). ``replica=None`` means all replicas.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from surgeguard_dashboard.door import reason_colour, reason_order, rejected, seen_reasons
from surgeguard_dashboard.drills import Drill
from surgeguard_dashboard.model import Decision, Signals, Tick
from surgeguard_dashboard.palette import knob_style
from surgeguard_dashboard.timeplot import (
    LIMIT_COLOUR,
    layout,
    mark_drills,
    series,
    shade_modes,
    subplot_titles,
    x_ms,
)

LATENCY_COLOURS = {"p50": "#9ecae9", "p95": "#4c78a8", "p99": "#1f3b73"}
SLO_COLOUR = "#d62728"
WORST_COLOUR = "#d62728"
BUSIEST_COLOUR = "#f58518"
CALM_COLOUR = "#4c78a8"
BUSY_SHARE = 0.8  # the controller calls a dependency busy at this utilisation
ERROR = ("#000000", "solid")  # real 5xx: (colour, dash)
U503 = ("#7f7f7f", "dash")  # deliberate 503s
GOODPUT_COLOUR = "#1b5e20"
# Saturation: what is measured solid, its limit dashed in the same colour.
SATURATION_COLOURS = ("#4c78a8", "#f58518", "#b279a2")


def latency_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    slo_s: float,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """p50/p95/p99 of admitted requests (ms), the SLO, and the concurrency limit as a
    step line on a second axis (with the inner loop's limit under it, dotted, when one
    moved it); shaded spans where a mode was on."""
    x = x_ms(ticks, offset_s)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for q, get in (
        ("p50", lambda s: s.p50_s),
        ("p95", lambda s: s.p95_s),
        ("p99", lambda s: s.p99_s),
    ):
        y = series(ticks, replica, get) * 1000.0
        fig.add_trace(
            go.Scatter(x=x, y=y, name=q, uid=q, mode="lines", line={"color": LATENCY_COLOURS[q]}),
            secondary_y=False,
        )
    slo_x = x[[0, -1]] if len(x) else x
    fig.add_trace(
        go.Scatter(
            x=slo_x,
            y=np.full(len(slo_x), slo_s * 1000.0),
            name=f"SLO {slo_s * 1000:.0f} ms",
            uid="slo",
            mode="lines",
            line={"color": SLO_COLOUR, "dash": "dash"},
            hoverinfo="skip",
        ),
        secondary_y=False,
    )
    limit = series(ticks, replica, lambda s: s.concurrency_limit)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=limit,
            name="concurrency limit",
            uid="limit",
            mode="lines",
            line={"color": LIMIT_COLOUR, "shape": "hv", "width": 1.5},
        ),
        secondary_y=True,
    )
    inner = series(ticks, replica, lambda s: s.inner_limit)
    if np.any(np.isfinite(inner) & (inner != limit)):  # an inner loop moved under the knob
        fig.add_trace(
            go.Scatter(
                x=x,
                y=inner,
                name="inner limit",
                uid="inner_limit",
                mode="lines",
                line={"color": LIMIT_COLOUR, "shape": "hv", "width": 1.5, "dash": "dot"},
            ),
            secondary_y=True,
        )
    shade_modes(fig, ticks, offset_s)
    mark_drills(fig, ticks, drills, offset_s)
    fig.update_yaxes(title_text="latency, ms", secondary_y=False)
    fig.update_yaxes(title_text="limit, requests", secondary_y=True, showgrid=False)
    return layout(fig, "latency", "Admitted latency against the SLO")


def throughput_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """Requests per second: admitted and rejected (stacked, by reason), goodput and
    5xx errors as lines."""
    x = x_ms(ticks, offset_s)
    reasons = reason_order(seen_reasons(ticks, replica))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=series(ticks, replica, lambda s: s.admitted_per_s),
            name="admitted",
            uid="admitted",
            mode="lines",
            stackgroup="offered",
            line={"color": "#54a24b", "width": 0.5},
        )
    )
    for reason in reasons:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=series(ticks, replica, rejected(reason)),
                name=f"rejected: {reason}",
                uid=f"rejected:{reason}",
                mode="lines",
                stackgroup="offered",
                line={"color": reason_colour(reason), "width": 0.5},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=series(ticks, replica, lambda s: s.good_per_s),
            name="goodput (inside the SLO)",
            uid="goodput",
            mode="lines",
            line={"color": GOODPUT_COLOUR, "dash": "dot"},
        )
    )
    for trace in error_traces(ticks, replica, x):
        fig.add_trace(trace)
    mark_drills(fig, ticks, drills, offset_s)
    fig.update_yaxes(title_text="requests/s")
    return layout(fig, "throughput", "Throughput: admitted vs rejected, and errors")


def error_traces(ticks: Sequence[Tick], replica: str | None, x: np.ndarray) -> list[go.Scatter]:
    """Real 5xx and deliberate 503s (a bulkhead full or timed out: the service says
    "unavailable" on purpose, as the load report counts them) as two lines; one line
    of every 5xx, named so, from a controller that does not tell them apart."""
    separated = any(
        not math.isnan(s.server_error_rate) for t in ticks if (s := t.signals(replica)) is not None
    )
    if not separated:
        every = series(ticks, replica, lambda s: s.admitted_per_s * s.error_rate)
        return [_line(x, every, "5xx, deliberate 503s too", "errors", *ERROR)]
    real = series(ticks, replica, lambda s: s.server_errors_per_s)
    deliberate = series(ticks, replica, lambda s: s.deliberate_503_per_s)
    return [
        _line(x, real, "server errors (5xx, not 503)", "errors", *ERROR),
        _line(x, deliberate, "deliberate 503s (bulkhead)", "unavailable", *U503),
    ]


def _line(x: np.ndarray, y: np.ndarray, name: str, uid: str, colour: str, dash: str) -> go.Scatter:
    return go.Scatter(
        x=x, y=y, name=name, uid=uid, mode="lines", line={"color": colour, "dash": dash, "width": 2}
    )


def saturation_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """In flight against the limit; queue depth against the shed threshold; queue wait
    (p99) against the queue timeout."""
    x = x_ms(ticks, offset_s)
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("in flight (peak) vs limit", "queue depth vs shed threshold", "queue wait"),
    )
    subplot_titles(fig)
    rows: list[tuple[int, str, str, Callable[[Signals], float], bool]] = [  # row, ..., limit?
        (1, "in flight (peak)", "inflight", lambda s: s.peak_in_flight, False),
        (1, "concurrency limit", "limit", lambda s: s.concurrency_limit, True),
        (2, "queue depth", "queue", lambda s: s.queue_depth, False),
        (2, "shed threshold (queue limit)", "queue_limit", lambda s: s.queue_limit, True),
        (3, "queue wait p99, ms", "wait", lambda s: s.queue_wait_p99_s * 1000.0, False),
        (3, "queue timeout, ms", "timeout", lambda s: s.queue_timeout_s * 1000.0, True),
    ]
    for row, name, uid, get, is_limit in rows:
        colour = SATURATION_COLOURS[row - 1]
        line = {"color": colour, "shape": "hv", "dash": "dash"} if is_limit else {"color": colour}
        fig.add_trace(
            go.Scatter(
                x=x, y=series(ticks, replica, get), name=name, uid=uid, mode="lines", line=line
            ),
            row=row,
            col=1,
        )
    mark_drills(fig, ticks, drills, offset_s)
    return layout(fig, "saturation", "Saturation", height=480, subplots=True)


def bottleneck_figure(
    signals: Signals | None,
    inflation: Mapping[str, float],
    worst: str | None,
    *,
    named: bool = True,
    elsewhere: str = "",
) -> go.Figure:
    """One bar per dependency for utilisation (in flight / limit) and one for latency
    inflation (p99 over its healthy baseline); the worst one highlighted: red when it
    is the bottleneck the controller named, amber when it is only the busiest.
    ``elsewhere``: the controller's bottleneck when it is not a dependency, as an
    operator reads it ("rejection work", "CPU", "admission"); the title names it."""
    deps = sorted(signals.dependencies) if signals is not None else []
    highlight = WORST_COLOUR if named else BUSIEST_COLOUR
    colours = [highlight if d == worst else CALM_COLOUR for d in deps]
    util = [signals.dependencies[d].utilisation * 100.0 for d in deps] if signals else []
    infl = [inflation.get(d, math.nan) for d in deps]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("utilisation, % of its slots", "latency inflation, x healthy p99"),
    )
    subplot_titles(fig)
    fig.add_trace(
        go.Bar(x=deps, y=util, name="utilisation", uid="utilisation", marker_color=colours),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=deps, y=infl, name="latency inflation", uid="inflation", marker_color=colours),
        row=1,
        col=2,
    )
    fig.add_hline(y=BUSY_SHARE * 100, line_dash="dot", line_color=LIMIT_COLOUR, row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dot", line_color=LIMIT_COLOUR, row=1, col=2)
    # Room above the reference lines and the bars: a line at the top edge of a plot
    # runs into the subplot's title right above it.
    fig.update_yaxes(range=[0, headroom(util, 100.0)], row=1, col=1)
    fig.update_yaxes(range=[0, headroom(infl, 2.0)], row=1, col=2)
    subtitle = ""  # on a line of its own: a half-width chart cuts a long title off
    if elsewhere:
        busiest = f"; busiest dependency: {worst}" if worst is not None else ""
        title, subtitle = f"Bottleneck: {elsewhere}", f"not a dependency{busiest}"
    elif worst is None:
        title = "Bottleneck: none (every dependency is idle)"
    elif named:
        title = f"Bottleneck: {worst}"
    else:
        title, subtitle = f"Busiest dependency: {worst}", "not named a bottleneck"
    fig.update_layout(showlegend=False)
    layout(fig, "bottleneck", title, subplots=True, subtitle=subtitle)
    fig.update_xaxes(type="category")
    fig.update_layout(hovermode="closest")
    return fig


def headroom(values: Sequence[float], at_least: float) -> float:
    """The top of a y axis: 15% above the largest value (or ``at_least``)."""
    top = max((v for v in values if not math.isnan(v)), default=at_least)
    return 1.15 * max(top, at_least)


def _hover(text: str) -> str:
    return html.escape(text, quote=False)


def controller_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """Knob values over time (step lines) with a marker for each decision; hovering a
    marker shows the controller's reason. ``replica=None``: sums over replicas."""
    x = x_ms(ticks, offset_s)
    values = [t.knob_values(replica) for t in ticks]
    knobs = sorted({k for v in values for k in v})
    fig = go.Figure()
    for knob in knobs:
        y = np.fromiter((v.get(knob, math.nan) for v in values), float, len(values))
        colour, dash = knob_style(knob)
        line = {"color": colour, "dash": dash, "shape": "hv", "width": 2}
        fig.add_trace(go.Scatter(x=x, y=y, name=knob, uid=f"knob:{knob}", mode="lines", line=line))
    marks: dict[str, list[tuple[float, float, str]]] = {"cut": [], "grow": [], "not applied": []}
    for tick, knob_values in zip(ticks, values, strict=True):
        for d in tick.decisions:
            if replica is not None and d.replica not in (replica, "all"):
                continue
            group = d.action if d.applied else "not applied"
            y_at = knob_values.get(d.knob, d.new if d.new is not None else math.nan)
            marks.setdefault(group, []).append(((tick.at + offset_s) * 1000.0, y_at, _text(d)))
    styles = {
        "cut": {"symbol": "triangle-down", "color": "#d62728", "size": 10},
        "grow": {"symbol": "triangle-up", "color": "#2ca02c", "size": 10},
        "not applied": {"symbol": "circle-open", "color": "#7f7f7f", "size": 9},
    }
    for group, points in marks.items():
        fig.add_trace(
            go.Scatter(
                x=np.array([p[0] for p in points], float),
                y=np.array([p[1] for p in points], float),
                text=[p[2] for p in points],
                name=f"decision: {group}",
                uid=f"decision:{group}",
                mode="markers",
                marker=styles.get(group, {}),
                hovertemplate="%{text}<extra></extra>",
            )
        )
    shade_modes(fig, ticks, offset_s)
    mark_drills(fig, ticks, drills, offset_s)
    fig.update_yaxes(title_text="value" + (" (sum over replicas)" if replica is None else ""))
    layout(fig, "controller", "Controller: knob values and its decisions", height=380)
    fig.update_layout(hovermode="closest")
    return fig


def _text(d: Decision) -> str:
    move = f"{d.old} → {d.new}" if d.old is not None and d.new is not None else d.action
    return f"<b>{_hover(d.knob)}</b> {move} · {_hover(d.replica)}<br>{_hover(d.reason)}"
