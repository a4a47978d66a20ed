"""The operator dashboard: the script ``streamlit run`` executes.

Run it with ``surgeguard dashboard --controller URL`` (or ``surgeguard up``). The
controller's URL comes from the environment, ``SURGEGUARD_CONTROLLER_URL`` (the
``dashboard`` subcommand sets it from ``--controller``), default
``http://127.0.0.1:8001``; the refresh period from ``SURGEGUARD_DASHBOARD_REFRESH_MS``.

A full run refreshes the data once, draws the sidebar (view choices and operator
actions) and the live part; after that only the live part (a fragment) reruns, every
refresh period, fetching just what is new. The data of a session is kept in its state,
so when the controller goes away the last data stays on screen under a banner.
"""

from __future__ import annotations

import time

import httpx
import streamlit as st

from surgeguard.settings import SettingsError
from surgeguard_dashboard import actions, drill_panel, views
from surgeguard_dashboard.client import DEFAULT_TIMEOUT, ControllerClient
from surgeguard_dashboard.feed import Feed
from surgeguard_dashboard.settings import DashboardSettings

REFRESHED_KEY = "refreshed_in_this_run"


@st.cache_resource(show_spinner=False, max_entries=4, on_release=ControllerClient.close)
def _client(url: str) -> ControllerClient:
    """One HTTP client (and connection pool) per controller, shared by all sessions."""
    return ControllerClient(url, httpx.Client(timeout=DEFAULT_TIMEOUT))


def _config() -> tuple[str, float]:
    """(controller URL, refresh period in seconds), read once per session."""
    if "config" not in st.session_state:
        try:
            settings = DashboardSettings.load()
        except SettingsError as exc:
            st.error(f"The dashboard cannot start: {exc}")
            st.stop()
        st.session_state["config"] = (
            settings.controller_url,
            settings.dashboard_refresh_ms / 1000.0,
        )
    url, refresh_s = st.session_state["config"]
    return str(url), float(refresh_s)


# A Material icon (Streamlit serves its font), not an emoji: a system without an emoji
# font draws an emoji as an empty box.
st.set_page_config(
    page_title="surgeguard operator dashboard", page_icon=":material/shield:", layout="wide"
)
url, refresh_s = _config()
client = _client(url)
feed: Feed = st.session_state.setdefault("feed", Feed())

# Refresh before drawing the sidebar, so its choices (replicas, modes) are current.
window_s = int(st.session_state.get("window_min", views.WINDOWS_MIN[0])) * 60
feed.refresh(client, window_s, time.time())
st.session_state[REFRESHED_KEY] = True

with st.sidebar:
    st.title(":material/shield: surgeguard")
    view = views.view_controls(feed, refresh_s)
    st.divider()
    actions.operator_panel(client, feed.state, view.replica)
    drill_status = None
    if feed.state is not None:
        drill_status = drill_panel.drills_panel(
            client, feed.drills, lambda at: views.clock(at, view.offset_s)
        )


def live() -> None:
    if not st.session_state.pop(REFRESHED_KEY, False):  # a refresh of its own
        feed.refresh(client, view.window_s, time.time())
        if actions.controls_changed(feed.state) or drill_panel.changed(feed.drills):
            st.rerun()  # modes, pins, autopilot or drills changed: redraw the sidebar too
    now = time.time()
    if drill_status is not None:  # the sidebar's drill status: the banner's data and time
        with drill_status:
            drill_panel.status_line(feed.drills, now)
    views.live_section(feed, url, view, now)


st.fragment(run_every=view.refresh_s if view.live else None)(live)()
