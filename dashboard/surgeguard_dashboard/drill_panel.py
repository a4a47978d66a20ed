"""The sidebar's load-test drills panel: run a named scenario against the stack through
the controller (which runs ``surgeguard load``), stop it, and see what ran.

Like every operator action it needs the admin token typed into the sidebar, runs in
its button's callback and confirms the outcome, or shows the controller's refusal,
in one line at the top of the sidebar (``surgeguard_dashboard.actions``). The live part of the
page says how far the current drill is (``surgeguard_dashboard.views``); the charts mark each one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from surgeguard_dashboard.actions import _act, _clear, _reason, _reason_input, _token
from surgeguard_dashboard.client import ControllerClient
from surgeguard_dashboard.drills import Drills, describe, rows, seconds
from surgeguard_dashboard.literal import literal

SHOWN_KEY = "drills_shown"  # the drill the sidebar drew; when it changes, redraw it
MAX_USERS = 10_000
DURATION_RANGE_S = (5, 3_600)


# -- callbacks (run before the page is drawn again) ---------------------------------------


def _start(client: ControllerClient) -> None:
    scenario = str(st.session_state.get("drill_scenario") or "")
    if (reason := _reason("drill_reason")) is None or not scenario:
        return
    users = int(st.session_state.get(f"drill_users_{scenario}", 1))
    duration_s = float(st.session_state.get(f"drill_duration_{scenario}", 60))
    if _act(
        f"Starting the {scenario} drill",
        lambda t: client.start_drill(
            t, scenario, users=users, duration_s=duration_s, reason=reason
        ),
        lambda d: (
            f"Drill {d.scenario} started: {d.users} users for {seconds(d.duration_s)} "
            f"against the first target (id {d.id}). Reason: {literal(reason)}"
        ),
    ):
        _clear("drill_reason")


def _stop(client: ControllerClient) -> None:
    if (reason := _reason("drill_stop_reason")) is None:
        return
    if _act(
        "Stopping the drill",
        lambda t: client.stop_drill(t, reason=reason),
        lambda d: (
            f"Drill {d.scenario} {d.status} after {seconds(d.elapsed_s(time.time()))} "
            f"(exit {d.exit_code}); its reports are in {d.out_dir or 'its directory'}. "
            f"Reason: {literal(reason)}"
        ),
    ):
        _clear("drill_stop_reason")


# -- drawing ----------------------------------------------------------------------------


def shown(drills: Drills) -> tuple[str, str] | None:
    c = drills.current
    return (c.id, c.status) if c is not None else None


def changed(drills: Drills) -> bool:
    """Whether a drill started or ended since the sidebar was drawn."""
    return bool(st.session_state.get(SHOWN_KEY) != shown(drills))


def status_line(drills: Drills, now: float) -> None:
    """What runs now (``now``: unix seconds), or that nothing does."""
    if drills.current is not None:
        st.markdown(describe(drills.current, now))
    else:
        st.caption("No load-test drill is running.")


def drills_panel(
    client: ControllerClient, drills: Drills, clock: Callable[[float], str]
) -> DeltaGenerator:
    """The panel, in an expander (open while a drill runs); ``clock`` turns unix
    seconds into the viewer's time of day. Returns the place of its status line, which
    the live part of the page fills on every refresh (``status_line``), from the same
    data and at the same moment as the banner above the charts."""
    st.session_state[SHOWN_KEY] = shown(drills)
    locked = not _token()
    with st.expander("Drills (load tests)", expanded=drills.current is not None):
        slot = st.container()
        slot.empty()  # a first write from the full run, so the live part may write here
        _forms(client, drills, locked)
        if drills.recent:
            st.caption("Recent drills")
            table = rows(drills.recent, clock, time.time())
            st.dataframe(table, hide_index=True, key="drills_table")
    return slot


def _forms(client: ControllerClient, drills: Drills, locked: bool) -> None:
    own = drills.own_running
    if not drills.scenarios:
        st.caption("The controller offers no scenarios.")
        return
    scenario = st.selectbox(
        "Scenario", list(drills.scenarios), key="drill_scenario", disabled=locked
    )
    users, duration_s = drills.scenarios[str(scenario or next(iter(drills.scenarios)))]
    low, high = DURATION_RANGE_S
    with st.form("drill_form"):
        st.number_input(
            "Users (most at once)",
            min_value=1,
            max_value=MAX_USERS,
            value=min(max(users, 1), MAX_USERS),
            step=10,
            key=f"drill_users_{scenario}",
            disabled=locked,
        )
        st.number_input(
            "Duration, s",
            min_value=low,
            max_value=high,
            value=int(min(max(duration_s if math.isfinite(duration_s) else 60, low), high)),
            step=10,
            key=f"drill_duration_{scenario}",
            disabled=locked,
        )
        _reason_input("drill_reason", locked)
        st.form_submit_button(
            "Start drill",
            key="drill_submit",
            on_click=_start,
            args=(client,),
            disabled=locked or own is not None,
            help="One drill at a time: stop the running one first." if own else None,
        )
    with st.form("drill_stop_form"):
        _reason_input("drill_stop_reason", locked or own is None)
        st.form_submit_button(
            "Stop drill",
            key="drill_stop_submit",
            on_click=_stop,
            args=(client,),
            disabled=locked or own is None,
        )
