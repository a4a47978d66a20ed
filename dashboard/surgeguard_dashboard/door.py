"""The door on the dashboard: rejections by reason and the penalty box. Pure: data in,
numbers, words or a Plotly figure out.

Each rejection reason keeps one colour wherever it is drawn (here and in the throughput
chart), so ``unauthorized`` is the same red whether or not ``queue_full`` is on screen.
The reasons are the library's own (``surgeguard.reasons``); a reason a newer replica
reports that this list does not know is drawn grey under its own name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from surgeguard import reasons
from surgeguard_dashboard.drills import Drill
from surgeguard_dashboard.model import Signals, Tick
from surgeguard_dashboard.timeplot import layout, mark_drills, series, subplot_titles, x_ms

REASON_COLOURS: dict[str, str] = {
    reasons.QUEUE_FULL: "#f58518",
    reasons.QUEUE_TIMEOUT: "#eeca3b",
    reasons.PRIORITY: "#ff9da6",
    reasons.CLIENT_SHARE: "#9d755d",
    reasons.MODE: "#b279a2",
    reasons.UNAUTHORIZED: "#e45756",
    reasons.DUPLICATE_KEY: "#17becf",
    reasons.PENALTY_FULL: "#54278f",
}
UNKNOWN_REASON_COLOUR = "#bab0ac"
HELD_COLOUR = "#08519c"  # not penalty_full's purple: a series of its own
HOLDS_COLOUR = "#6baed6"


def reason_colour(reason: str) -> str:
    return REASON_COLOURS.get(reason, UNKNOWN_REASON_COLOUR)


def reason_order(names: set[str]) -> list[str]:
    """The library's order (the limiter's reasons, then the door's), unknown ones last."""
    known = [r for r in reasons.REJECTION_REASONS if r in names]
    return known + sorted(names - set(known))


def breakdown_text(by_reason: Sequence[tuple[str, float]]) -> str:
    """``"penalty_full 12,000/s · unauthorized 2,100/s"``; ``"none"`` without rejections
    (``by_reason``: ``summary.rejections_by_reason``)."""
    return " · ".join(f"{reason} {_rate(value)}/s" for reason, value in by_reason) or "none"


def rejected(reason: str) -> Callable[[Signals], float]:
    """Rejections/s of one reason in a window (0 when the window had none)."""
    return lambda s: s.rejected_per_s.get(reason, 0.0)


def seen_reasons(ticks: Sequence[Tick], replica: str | None) -> set[str]:
    """The reasons that rejected anything in the window: a replica reports every reason
    it knows, and a legend entry per reason at zero would crowd out the ones that count."""
    return {
        r
        for t in ticks
        if (s := t.signals(replica)) is not None
        for r, v in s.rejected_per_s.items()
        if v > 0
    }


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def door_figure(
    ticks: Sequence[Tick],
    replica: str | None,
    *,
    offset_s: float = 0.0,
    drills: Sequence[Drill] = (),
) -> go.Figure:
    """Rejections per second stacked by reason (one fixed colour each); below it the
    penalty box: requests held now (clients that came back before their Retry-After)
    and holds per second on a second axis."""
    x = x_ms(ticks, offset_s)
    names = seen_reasons(ticks, replica)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        row_heights=[0.6, 0.4],
        specs=[[{}], [{"secondary_y": True}]],
        subplot_titles=("rejections by reason, requests/s", "penalty box"),
    )
    subplot_titles(fig)
    for reason in reason_order(names):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=series(ticks, replica, rejected(reason)),
                name=reason,
                uid=f"reason:{reason}",
                mode="lines",
                stackgroup="rejected",
                line={"color": reason_colour(reason), "width": 0.5},
                hovertemplate="%{y:,.1f}/s",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=series(ticks, replica, lambda s: s.penalty_held),
            name="held in the penalty box",
            uid="penalty_held",
            mode="lines",
            line={"color": HELD_COLOUR, "width": 2},
        ),
        row=2,
        col=1,
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=series(ticks, replica, lambda s: s.penalty_holds_per_s),
            name="holds/s",
            uid="penalty_holds",
            mode="lines",
            line={"color": HOLDS_COLOUR, "dash": "dot"},
        ),
        row=2,
        col=1,
        secondary_y=True,
    )
    mark_drills(fig, ticks, drills, offset_s)
    fig.update_yaxes(title_text="requests", row=2, col=1, secondary_y=False)
    fig.update_yaxes(title_text="holds/s", row=2, col=1, secondary_y=True, showgrid=False)
    title = "The door: rejections by reason and the penalty box"
    return layout(fig, "door", title, height=420, subplots=True)
