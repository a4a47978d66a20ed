"""The read-only parts of the page: banner, status strip, charts, tables.

Drawn from a ``Feed`` on every live refresh. Charts have fixed keys and the figures a
fixed ``uirevision``; the time zoom is held by ``surgeguard_dashboard.zoom`` so it survives the
redraw a refresh causes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from surgeguard_dashboard import bands, door, figures, jobs, strip, zoom
from surgeguard_dashboard.budget_panel import budget_panel
from surgeguard_dashboard.drills import chaos_lines, describe
from surgeguard_dashboard.feed import Feed
from surgeguard_dashboard.literal import literal
from surgeguard_dashboard.model import AuditEntry, Decision, State
from surgeguard_dashboard.summary import (
    bottleneck_label,
    inflation,
    rejections_by_reason,
    status,
    worst_dependency,
)

ALL_REPLICAS = "all replicas"
WINDOWS_MIN = (5, 15, 60)
TABLE_HEIGHT = 420  # pixels; a longer table scrolls inside
TABLE_ROWS_UNSCROLLED = 8


@dataclass(frozen=True)
class View:
    replica: str | None  # None: all replicas
    window_s: int
    live: bool
    refresh_s: float
    offset_s: float  # the viewer's offset from UTC, seconds


def clock(at: float, offset_s: float) -> str:
    """Unix seconds as the viewer's wall-clock time, ``HH:MM:SS``."""
    if math.isnan(at):
        return "n/a"
    return datetime.fromtimestamp(at + offset_s, tz=UTC).strftime("%H:%M:%S")


def day(at: float, offset_s: float) -> str:
    """Unix seconds as the viewer's date, ``YYYY-MM-DD``."""
    if math.isnan(at):
        return "n/a"
    return datetime.fromtimestamp(at + offset_s, tz=UTC).strftime("%Y-%m-%d")


def viewer_offset_s() -> float:
    """The browser's offset from UTC in seconds (0 when it did not say)."""
    minutes_behind = st.context.timezone_offset
    return -60.0 * minutes_behind if minutes_behind is not None else 0.0


def view_controls(feed: Feed, refresh_s: float) -> View:
    """Replica, time window and live-refresh switch (in the sidebar)."""
    replicas = sorted(feed.state.replicas) if feed.state else []
    choice = st.selectbox("Replica", [ALL_REPLICAS, *replicas], key="replica")
    minutes = st.radio(
        "Time window",
        WINDOWS_MIN,
        format_func=lambda m: f"{m} min" if m < 60 else "1 h",
        horizontal=True,
        key="window_min",
    )
    live = st.toggle(f"Live refresh (every {refresh_s:g} s)", value=True, key="live")
    return View(
        replica=None if choice in (None, ALL_REPLICAS) else str(choice),
        window_s=int(minutes or WINDOWS_MIN[0]) * 60,
        live=live,
        refresh_s=refresh_s,
        offset_s=viewer_offset_s(),
    )


def banner(feed: Feed, url: str, view: View) -> None:
    """Say plainly when the controller cannot be reached, and what is on screen."""
    if feed.error is None:
        if not view.live:
            st.info("Live refresh is paused: the data below is not updating.")
        return
    retry = f"retrying every {view.refresh_s:g} s" if view.live else "live refresh is paused"
    if feed.has_data:
        age = time.time() - feed.updated_at
        st.error(
            f"**Controller unreachable** ({url}): {feed.error}. Showing the last data, from "
            f"{clock(feed.updated_at, view.offset_s)} ({age:.0f} s ago); {retry}."
        )
    else:
        st.error(f"**Controller unreachable** ({url}): {feed.error}. No data yet; {retry}.")


def zoom_bar(view: View) -> None:
    span = zoom.current()
    if span is None:
        st.caption(
            "Drag across a time chart to zoom every time chart to that span; the zoom "
            "holds across refreshes. Double-click a chart to go back to the live window."
        )
        return
    start, end = (clock(ms / 1000.0, 0.0) for ms in span)  # the axis is already shifted
    left, right = st.columns([4, 1])
    left.info(f"Zoomed to {start} to {end}: the charts hold this span while the data refreshes.")
    right.button("Back to the live window", key="zoom_reset", on_click=zoom.reset)


def charts(state: State, feed: Feed, view: View, *, violated: bool = False) -> None:
    """Every chart; ``violated``: the SLO is violated now (the reasons open by default)."""
    replica, offset = view.replica, view.offset_s
    ticks = zoom.visible(feed.ticks, offset)
    drills = feed.drills.recent  # each is marked on every time chart it overlaps

    def time_chart(figure: Any, key: str) -> None:
        bands.mark_bottlenecks(figure, ticks, offset)  # the band of names, on every one
        zoom.time_chart(figure, key)

    zoom.time_chart(bands.band_figure(ticks, offset_s=offset), "bottleneck_band")
    left, right = st.columns(2)
    with left:
        latency = figures.latency_figure(
            ticks, replica, state.slo_s, offset_s=offset, drills=drills
        )
        time_chart(latency, "latency")
        saturation = figures.saturation_figure(ticks, replica, offset_s=offset, drills=drills)
        time_chart(saturation, "saturation")
        time_chart(door.door_figure(ticks, replica, offset_s=offset, drills=drills), "door")
        by_reason = rejections_by_reason(state.signals(replica))
        st.caption("Rejected in the last window, by reason: " + door.breakdown_text(by_reason))
    with right:
        throughput = figures.throughput_figure(ticks, replica, offset_s=offset, drills=drills)
        time_chart(throughput, "throughput")
        signals = state.signals(replica)
        # The controller scores the aggregate (or its only replica): use its numbers there.
        scored = replica is None or len(state.replicas) == 1
        scores = state.bottleneck.scores if scored else {}
        by_dep = inflation(signals, feed.ticks, replica, scores) if signals else {}
        named = state.bottleneck.name if scored else ""
        worst = worst_dependency(signals, by_dep, named) if signals else None
        deps = signals.dependencies if signals else {}
        elsewhere = bottleneck_label(named) if named not in ("", "none", *deps) else ""
        figure = figures.bottleneck_figure(
            signals, by_dep, worst, named=worst == named, elsewhere=elsewhere
        )
        st.plotly_chart(figure, key="bottleneck", config=zoom.PLOT_CONFIG)
        time_chart(jobs.jobs_figure(ticks, replica, offset_s=offset, drills=drills), "jobs")
    knobs = figures.controller_figure(ticks, replica, offset_s=offset, drills=drills)
    time_chart(knobs, "controller")
    reasons = [
        {"replica": r, "knob": knob, "reason": why}
        for r, v in sorted(state.replicas.items())
        if replica in (None, r)
        for knob, why in sorted(v.reasons.items())
    ]
    if reasons:
        title = "Why each knob is where it is: the controller's latest reasons"
        # Open while the SLO is violated: that is when the why matters. A key of its own
        # per state, so the default applies when the state changes.
        with st.expander(title, expanded=violated, key=f"reasons_open_{violated}"):
            _table(reasons)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def decision_rows(decisions: list[Decision], offset_s: float) -> list[dict[str, Any]]:
    return [
        {
            "time": clock(d.at, offset_s),
            "replica": d.replica,
            "knob": d.knob,
            "change": f"{d.old} → {d.new}" if d.old is not None else d.action,
            "applied": d.applied,
            "reason": d.reason,
        }
        for d in decisions
    ]


def audit_rows(entries: list[AuditEntry], offset_s: float) -> list[dict[str, Any]]:
    """The audit table's rows; who and why as typed (``st.table`` renders Markdown)."""
    return [
        {
            "time": clock(a.at, offset_s),
            "who": literal(a.who),
            "what": a.what,
            "old → new": f"{_compact(a.old)} → {_compact(a.new)}",
            "reason": literal(a.reason),
        }
        for a in entries
    ]


def _table(rows: list[dict[str, Any]]) -> None:
    """A static table whose long cells (reasons) wrap instead of being cut off; a long
    one scrolls inside a fixed height."""
    if len(rows) > TABLE_ROWS_UNSCROLLED:
        st.table(rows, hide_index=True, height=TABLE_HEIGHT)
    else:
        st.table(rows, hide_index=True)


def tables(feed: Feed, view: View) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Recent decisions")
        rows = decision_rows(feed.decisions, view.offset_s)
        if rows:
            _table(rows)
        else:
            st.caption("No decisions yet.")
    with right:
        st.subheader("Audit: operator actions")
        rows = audit_rows(feed.audit, view.offset_s)
        if rows:
            _table(rows)
        else:
            st.caption("No operator action yet.")


def live_section(feed: Feed, url: str, view: View, now: float | None = None) -> None:
    """Everything that refreshes: banner, status, charts, tables (``now``: unix
    seconds, the moment the page describes; by default the current time)."""
    now = time.time() if now is None else now
    banner(feed, url, view)
    state = feed.state
    if state is None:
        st.info(f"Waiting for the first answer from the controller at {url}.")
        return
    now_status = status(state, feed.ticks, view.replica)
    strip.status_strip(
        now_status, state, feed.ticks, feed.decisions, lambda at: clock(at, view.offset_s), now
    )
    st.caption(  # the charts' time axes show the time of day only: the date is here
        f"Controller {url} · {state.algorithm}, scope {state.scope}, tick {state.tick_s:g} s "
        f"· last tick {clock(state.last_tick_at, view.offset_s)} on "
        f"{day(state.last_tick_at, view.offset_s)} · "
        f"{len(feed.ticks)} points in the window · control version {state.control.version}"
    )
    if feed.drills.current is not None:
        st.info("Load-test drill " + describe(feed.drills.current, now))
    for line in chaos_lines(state.control.chaos):
        st.warning(line, icon=":material/science:")
    zoom_bar(view)
    charts(state, feed, view, violated=now_status.slo == "violated")
    budget_panel(state.budgets, view.replica)
    tables(feed, view)
