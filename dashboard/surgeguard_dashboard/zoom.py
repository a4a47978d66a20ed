"""One time zoom for every time chart, held by the server so it survives refreshes.

Streamlit (1.67) draws a Plotly chart whose data changed as a new element, so a zoom
made inside the browser lasts only until the next refresh, ``uirevision`` or not.
Instead, dragging across any time chart selects a span (a horizontal box
selection); the span is kept in the session and applied as the x range of all the
time charts, refresh after refresh, until the operator goes back to the live window
(double-click a chart, or the button). Spans are milliseconds on the charts' own
(viewer-shifted) time axis.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import streamlit as st

from surgeguard_dashboard.model import Tick

ZOOM_KEY = "time_zoom"
PLOT_CONFIG = {"displaylogo": False}


def _ms(value: Any) -> float:
    """A point on a date axis as Plotly reports it (ms number or date string) -> ms."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp() * 1000.0
        except ValueError:
            return math.nan
    return math.nan


def selected_span(selection: Any) -> tuple[float, float] | None:
    """The x span of the first box in a Plotly selection state; None when there is
    none (a cleared selection: back to the live window)."""
    chosen = selection.get("selection") if isinstance(selection, Mapping) else None
    boxes = chosen.get("box") if isinstance(chosen, Mapping) else None
    if not boxes or not isinstance(boxes[0], Mapping):
        return None
    xs = [_ms(x) for x in boxes[0].get("x") or ()]
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 2 or max(xs) <= min(xs):
        return None
    return (min(xs), max(xs))


def current() -> tuple[float, float] | None:
    span = st.session_state.get(ZOOM_KEY)
    return (float(span[0]), float(span[1])) if span else None


def visible(ticks: Sequence[Tick], offset_s: float) -> Sequence[Tick]:
    """The ticks inside the zoomed span (and one either side, so lines reach its
    edges); all of them when not zoomed. Drawing only these also keeps a chart of a
    past span identical from refresh to refresh, so the browser does not redraw it and
    whatever the operator did inside it (legend clicks, a closer zoom) stays."""
    span = current()
    if span is None:
        return ticks
    at_ms = [(t.at + offset_s) * 1000.0 for t in ticks]
    first = bisect_left(at_ms, span[0])
    last = bisect_right(at_ms, span[1])
    return ticks[max(0, first - 1) : last + 1]


def _selected(key: str) -> None:
    st.session_state[ZOOM_KEY] = selected_span(st.session_state.get(key))


def reset() -> None:
    st.session_state[ZOOM_KEY] = None


def time_chart(figure: Any, key: str) -> None:
    """Draw a time chart: drag selects a span to zoom to; the current span applies."""
    figure.update_layout(dragmode="select", selectdirection="h")
    span = current()
    if span is not None:
        figure.update_xaxes(range=list(span), autorange=False)
    st.plotly_chart(
        figure,
        key=key,
        config=PLOT_CONFIG,
        on_select=partial(_selected, key),
        selection_mode="box",
    )
