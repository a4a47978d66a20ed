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
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import streamlit as st

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
