"""The status strip: the SLO and the numbers at a glance, then the why in front: a
failing control loop, replicas that do not obey it, the bottleneck with how long it has
held, and the controller's last move with its reason in full (``surgeguard_dashboard.why``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import streamlit as st

from surgeguard_dashboard import door, why
from surgeguard_dashboard.model import Decision, State, Tick
from surgeguard_dashboard.summary import Status

SLO_COLOURS = {"met": "green", "at risk": "orange", "violated": "red", "no data": "gray"}


def status_strip(
    s: Status,
    state: State,
    ticks: Sequence[Tick],
    decisions: Sequence[Decision],
    clock: why.Clock,
    now: float,
) -> None:
    """``now``: unix seconds, the moment the page describes."""
    alert = why.tick_alert(state, now, clock)
    if alert is not None:
        st.error(alert)
    for line in why.control_alerts(state):
        st.error(line)
    numbers(s)
    for line in why.disobeying(state, now, clock):
        st.error(line)
    held = why.held_text(why.held(state, ticks, now), clock)
    say = st.info if s.bottleneck == "none" else st.warning
    held_for = f" ({held})" if held else ""
    say(f"**Bottleneck: {s.bottleneck_label}**{held_for} — {s.sentence}")
    st.markdown(why.last_change_text(why.last_change(state, decisions), now, clock))
    if s.stale_replicas:
        st.warning(
            "No fresh data from: " + ", ".join(s.stale_replicas) + " (they keep their last knobs)."
        )


def compact(value: float, unit: str = "") -> str:
    """``"120/s"``, ``"2.3k/s"``: short enough for a metric in a 1280 px window (a
    longer value is cut off with an ellipsis)."""
    if math.isnan(value):
        return "n/a"
    if value < 1000:
        return f"{value:,.0f}{unit}"
    return f"{value / 1000:,.1f}k{unit}" if value < 100_000 else f"{value / 1000:,.0f}k{unit}"


def numbers(s: Status) -> None:
    cols = st.columns([1.2, 1, 1, 1, 1, 1.2])
    colour = SLO_COLOURS[s.slo]
    cols[0].markdown(f"SLO state  \n### :{colour}[{s.slo.upper()}]", help=s.slo_why)
    over = (s.p99_s - s.slo_s) * 1000.0
    cols[1].metric(
        "Admitted p99",
        "n/a" if math.isnan(s.p99_s) else f"{s.p99_s * 1000:.0f} ms",
        None if math.isnan(over) else f"{over:+.0f} ms vs SLO",
        delta_color="inverse",
        help=f"The SLO: p99 of admitted requests within {s.slo_s * 1000:.0f} ms.",
    )
    offered = s.offered_per_s > 0  # at idle there is nothing to be a share of
    cols[2].metric(
        "Goodput",
        compact(s.goodput_per_s, "/s"),
        f"{s.good_share:.0%} of offered" if offered and not math.isnan(s.good_share) else None,
        delta_color="off",
        delta_arrow="off",  # a share, not a change
        help="Requests per second admitted, answered without a 5xx, inside the SLO.",
    )
    cols[3].metric(
        "Rejected",
        "n/a" if math.isnan(s.rejection_share) else f"{s.rejection_share:.0%}",
        f"of {compact(s.offered_per_s)} req/s" if offered else None,
        delta_color="off",
        delta_arrow="off",
        help="By reason: " + door.breakdown_text(s.rejected_by_reason),
    )
    cols[4].metric(
        "Penalty box",
        "n/a" if math.isnan(s.penalty_held) else f"{compact(s.penalty_held)} held",
        None if math.isnan(s.penalty_holds_per_s) else f"{compact(s.penalty_holds_per_s)} holds/s",
        delta_color="off",
        delta_arrow="off",
        help="Requests held right now because their client came back before the "
        "Retry-After it was given; a held request costs no CPU while it waits.",
    )
    with cols[5]:
        st.metric("Autopilot", "on" if s.autopilot else "paused")
        badges = " ".join(f":orange-badge[{m}]" for m in s.modes)
        st.markdown("Modes: " + (badges or ":gray-badge[none]"))
