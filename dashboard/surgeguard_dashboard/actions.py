"""The operator's sidebar: modes, knob overrides, autopilot, drills.

The admin token lives in this browser session's state only (a password field; never
in the URL, the query string or a log line). Without it every control is drawn
disabled with a note why. Each action runs in the submit button's callback, before
the page is drawn again, so the page that follows already shows its effect; the
outcome is confirmed on screen ("flash") with what changed, or with the controller's
own error message when it refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import streamlit as st

from surgeguard_dashboard.client import ControllerClient, ControllerError
from surgeguard_dashboard.literal import literal
from surgeguard_dashboard.model import Control, State

TOKEN_KEY = "admin_token"
FLASH_KEY = "flash"
SHOWN_KEY = "controls_shown"  # what the sidebar drew: modes, pins, autopilot, drills
REASON_HINT = "why (required, goes to the audit log)"
MAX_REASON = 200
T = TypeVar("T")


def _token() -> str:
    return str(st.session_state.get(TOKEN_KEY) or "").strip()


def _flash(kind: str, text: str) -> None:
    st.session_state[FLASH_KEY] = (kind, f"{datetime.now():%H:%M:%S} · {text}")


def _reason(key: str) -> str | None:
    reason = str(st.session_state.get(key) or "").strip()
    if not reason:
        _flash("error", "A reason is required: say why (it goes into the audit log).")
        return None
    return reason


def _act(what: str, call: Callable[[str], T], said: Callable[[T], str]) -> bool:
    """Run one write with the session's token; confirm it or show why it failed."""
    try:
        result = call(_token())
    except ControllerError as exc:
        _flash("error", f"{what} failed: {exc.message}")
        return False
    _flash("success", said(result))
    return True


def _clear(*keys: str) -> None:
    for key in keys:
        st.session_state[key] = ""


# -- callbacks (run before the page is drawn again) ---------------------------------------


def _set_mode(client: ControllerClient, mode: str, active: bool) -> None:
    key = f"mode_reason_{mode}"
    if (reason := _reason(key)) is None:
        return
    if _act(
        f"Switching {mode} {'on' if active else 'off'}",
        lambda t: client.set_mode(t, mode, active=active, reason=reason),
        lambda c: (
            f"Mode {mode} is now {'ON' if active else 'OFF'} (control version "
            f"{c.version}); active modes: {', '.join(sorted(c.modes)) or 'none'}. "
            f"Reason: {literal(reason)}"
        ),
    ):
        _clear(key)


def _set_knob(client: ControllerClient, knob: str) -> None:
    if (reason := _reason("knob_reason")) is None:
        return
    value = int(st.session_state[f"knob_value_{knob}"])
    pin = bool(st.session_state.get("knob_pin", True))
    if _act(
        f"Overriding {knob}",
        lambda t: client.set_knob(t, knob, value=value, pin=pin, reason=reason),
        lambda c: (
            f"{knob} set to {value} for every replica"
            f"{', pinned' if knob in c.pins else ', not pinned'} (control version {c.version}). "
            f"Reason: {literal(reason)}"
        ),
    ):
        _clear("knob_reason")


def _unpin(client: ControllerClient) -> None:
    knob = str(st.session_state.get("unpin_knob") or "")
    if (reason := _reason("unpin_reason")) is None or not knob:
        return
    if _act(
        f"Unpinning {knob}",
        lambda t: client.unpin(t, knob, reason=reason),
        lambda c: (
            f"{knob} unpinned: the controller may move it again (control version "
            f"{c.version}). Reason: {literal(reason)}"
        ),
    ):
        _clear("unpin_reason")


def _set_autopilot(client: ControllerClient, enabled: bool) -> None:
    if (reason := _reason("autopilot_reason")) is None:
        return
    if _act(
        "Resuming autopilot" if enabled else "Pausing autopilot",
        lambda t: client.set_autopilot(t, enabled=enabled, reason=reason),
        lambda c: (
            f"Autopilot {'resumed' if c.autopilot else 'paused'} (control version "
            f"{c.version}). Reason: {literal(reason)}"
        ),
    ):
        _clear("autopilot_reason")


def _start_drill(client: ControllerClient) -> None:
    dep = str(st.session_state.get("chaos_dependency") or "")
    if (reason := _reason("chaos_reason")) is None or not dep:
        return
    slow = float(st.session_state.get("chaos_latency", 1.0))
    errors = float(st.session_state.get("chaos_errors", 0.0))
    if _act(
        f"Drill on {dep}",
        lambda t: client.set_chaos(
            t, dep, latency_multiplier=slow, error_rate=errors, reason=reason
        ),
        lambda c: (
            f"Drill on {dep}: latency x{slow:g}, {errors:.0%} errors (control version "
            f"{c.version}). Reason: {literal(reason)}"
        ),
    ):
        _clear("chaos_reason")


def _calm(client: ControllerClient, dep: str, reason: str) -> Callable[[str], Control]:
    return lambda t: client.set_chaos(t, dep, latency_multiplier=1.0, error_rate=0.0, reason=reason)


def _clear_drills(client: ControllerClient, deps: tuple[str, ...]) -> None:
    if (reason := _reason("chaos_clear_reason")) is None:
        return
    for dep in deps:
        if not _act(f"Clearing the drill on {dep}", _calm(client, dep, reason), lambda c: ""):
            return
    _flash("success", f"Drills cleared on {', '.join(deps)}. Reason: {literal(reason)}")
    _clear("chaos_clear_reason")


# -- drawing --------------------------------------------------------------------------


def shown(state: State | None) -> tuple[object, ...]:
    """What the sidebar shows of the control state; when it changes, redraw it."""
    if state is None:
        return ()
    c = state.control
    drills = tuple(sorted(d for d, x in c.chaos.items() if not x.is_calm))
    return (tuple(sorted(c.modes)), tuple(sorted(c.pins)), c.autopilot, drills)


def controls_changed(state: State | None) -> bool:
    return st.session_state.get(SHOWN_KEY) != shown(state)


def _reason_input(key: str, locked: bool) -> None:
    st.text_input(
        "Reason",
        key=key,
        placeholder=REASON_HINT,
        max_chars=MAX_REASON,
        disabled=locked,
    )


def operator_panel(client: ControllerClient, state: State | None, replica: str | None) -> None:
    st.header("Operator actions")
    st.text_input(
        "Admin token",
        type="password",
        key=TOKEN_KEY,
        help="Kept in this browser session only: never in the URL or a log.",
    )
    locked = not _token()
    if locked:
        st.caption("🔒 Enter the admin token to act; every control stays disabled until then.")
    flash = st.session_state.get(FLASH_KEY)
    if flash:
        kind, text = flash
        (st.success if kind == "success" else st.error)(text)
    st.session_state[SHOWN_KEY] = shown(state)
    if state is None:
        st.caption("Actions appear once the controller has answered.")
        return
    _modes(client, state, locked)
    _autopilot(client, state, locked)
    _knobs(client, state, replica, locked)
    _drills(client, state, locked)


def _modes(client: ControllerClient, state: State, locked: bool) -> None:
    st.subheader("Degradation modes")
    for mode, description in sorted(state.modes_available.items()):
        on = mode in state.control.modes
        with st.form(f"mode_form_{mode}"):
            st.markdown(f"**{mode}** · " + (":red[**ON**]" if on else "off"))
            st.caption(description)
            _reason_input(f"mode_reason_{mode}", locked)
            st.form_submit_button(
                f"Turn {mode} {'off' if on else 'on'}",
                key=f"mode_submit_{mode}",
                on_click=_set_mode,
                args=(client, mode, not on),
                disabled=locked,
            )


def _autopilot(client: ControllerClient, state: State, locked: bool) -> None:
    st.subheader("Autopilot")
    on = state.control.autopilot
    with st.form("autopilot_form"):
        st.markdown(
            "The controller is **tuning the knobs**."
            if on
            else ":orange[**Paused**]: the controller only says what it would do."
        )
        _reason_input("autopilot_reason", locked)
        st.form_submit_button(
            "Pause autopilot" if on else "Resume autopilot",
            key="autopilot_submit",
            on_click=_set_autopilot,
            args=(client, not on),
            disabled=locked,
        )


def _knobs(client: ControllerClient, state: State, replica: str | None, locked: bool) -> None:
    with st.expander("Knob override", expanded=bool(state.control.pins)):
        _knob_forms(client, state, replica, locked)


def _knob_forms(client: ControllerClient, state: State, replica: str | None, locked: bool) -> None:
    knob = st.selectbox("Knob", sorted(state.bounds), key="knob_name", disabled=locked)
    if knob is not None:
        low, high = state.bounds[knob]
        now = state.knob_value(knob, replica)
        pinned = knob in state.control.pins
        with st.form("knob_form"):
            st.caption(
                f"Now {now if now is not None else 'unknown'}"
                f"{' (pinned)' if pinned else ''}; allowed {low}..{high}. "
                "An override applies to every replica."
            )
            st.number_input(
                "Value",
                min_value=low,
                max_value=high,
                value=min(max(now if now is not None else low, low), high),
                step=1,
                key=f"knob_value_{knob}",
                disabled=locked,
            )
            st.checkbox(
                "Pin it (the controller will not move it)",
                value=True,
                key="knob_pin",
                disabled=locked,
            )
            _reason_input("knob_reason", locked)
            st.form_submit_button(
                "Apply override",
                key="knob_submit",
                on_click=_set_knob,
                args=(client, knob),
                disabled=locked,
            )
    pins = sorted(state.control.pins)
    if not pins:
        st.caption("No knob is pinned.")
        return
    with st.form("unpin_form"):
        st.selectbox("Pinned knob", pins, key="unpin_knob", disabled=locked)
        _reason_input("unpin_reason", locked)
        st.form_submit_button(
            "Unpin", key="unpin_submit", on_click=_unpin, args=(client,), disabled=locked
        )


def _drills(client: ControllerClient, state: State, locked: bool) -> None:
    running = any(not c.is_calm for c in state.control.chaos.values())
    with st.expander("Drills (chaos)", expanded=running):
        _drill_forms(client, state, locked)


def _drill_forms(client: ControllerClient, state: State, locked: bool) -> None:
    deps = sorted(k.removeprefix("bulkhead.") for k in state.bounds if k.startswith("bulkhead."))
    active = {d: c for d, c in sorted(state.control.chaos.items()) if not c.is_calm}
    for dep, chaos in active.items():
        st.markdown(
            f":orange[**{dep}**]: latency x{chaos.latency_multiplier:g}, "
            f"{chaos.error_rate:.0%} errors"
        )
    if not active:
        st.caption("No drill is running.")
    with st.form("chaos_form"):
        st.selectbox("Dependency", deps, key="chaos_dependency", disabled=locked)
        st.number_input(
            "Latency multiplier",
            min_value=0.1,
            max_value=100.0,
            value=3.0,
            step=0.5,
            key="chaos_latency",
            disabled=locked,
        )
        st.slider("Error rate", 0.0, 1.0, value=0.0, step=0.05, key="chaos_errors", disabled=locked)
        _reason_input("chaos_reason", locked)
        st.form_submit_button(
            "Start drill",
            key="chaos_submit",
            on_click=_start_drill,
            args=(client,),
            disabled=locked,
        )
    if active:
        with st.form("chaos_clear_form"):
            _reason_input("chaos_clear_reason", locked)
            st.form_submit_button(
                "Clear all drills",
                key="chaos_clear_submit",
                on_click=_clear_drills,
                args=(client, tuple(active)),
                disabled=locked,
            )
