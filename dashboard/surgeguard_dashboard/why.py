"""The why in front: what the controller did last and why, how long the bottleneck has
held, whether the control loop works and whether each replica obeys it, as sentences
an operator reads in the status strip. Pure: data in, Markdown out (no Streamlit).

Everything reads the controller's own fields when it sends them (``last_change``,
``bottleneck.held_s``, ``tick``, per replica ``obeying``) and falls back to what an
older controller's data still says (the newest decision, the history's names, the age
of the last tick), or says nothing it cannot know. ``now`` and every time are unix
seconds; ``clock`` turns them into the viewer's time of day.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from surgeguard_dashboard.model import Decision, State, Tick

Clock = Callable[[float], str]
QUIET_TICKS = 10  # no tick for this many periods (and at least QUIET_MIN_S) is news
QUIET_MIN_S = 30.0


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 12 s"``, ``"1 h 5 min"``; ``"?"`` when unknown."""
    if math.isnan(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def last_change(state: State, decisions: Sequence[Decision]) -> Decision | None:
    """The controller's latest move: its own ``last_change``, else the newest decision
    in the log (``decisions``: newest first), else None."""
    if state.last_change is not None:
        return state.last_change
    return next((d for d in decisions if d.action != "hold"), None)


def move(d: Decision) -> str:
    if d.knob.startswith("mode."):
        return f"mode {d.knob.removeprefix('mode.')} {d.action}"
    change = f"{d.old} → {d.new}" if d.old is not None and d.new is not None else d.action
    return f"{d.knob} {change}"


def last_change_text(d: Decision | None, now: float, clock: Clock) -> str:
    """One line, the reason in full (never cut)."""
    if d is None:
        return "**Last move:** none yet: the controller has not moved a knob or a mode."
    where = f" on {d.replica}" if d.replica else ""
    when = f"{clock(d.at)}, {duration(now - d.at)} ago" if not math.isnan(d.at) else "time unknown"
    unapplied = "" if d.applied else " **Not applied**: the replica did not take it."
    reason = markdown_text(d.reason.rstrip(". ")) or "(no reason given)"
    return f"**Last move** ({when}): `{move(d)}`{where}. Why: {reason}.{unapplied}"


def markdown_text(text: str) -> str:
    """``text`` shown as itself in Streamlit's Markdown: no math (``$``), no emphasis
    or code from a stray ``*``, ``~`` or backtick."""
    for char in ("\\", "$", "*", "~", "`"):
        text = text.replace(char, "\\" + char)
    return text


@dataclass(frozen=True)
class Held:
    name: str
    since: float  # unix seconds (NaN: unknown)
    held_s: float  # seconds (NaN: unknown)


def held(state: State, ticks: Sequence[Tick], now: float) -> Held:
    """How long the current bottleneck name has held: the controller's numbers, else
    from the history (back from the newest point while the name is the same)."""
    b = state.bottleneck
    if not math.isnan(b.since):  # (before its first pick a controller has no "since")
        return Held(b.name, b.since, b.held_s if not math.isnan(b.held_s) else now - b.since)
    since = math.nan
    for tick in reversed(ticks):
        if tick.bottleneck.name != b.name:
            break
        since = tick.at
    return Held(b.name, since, now - since if not math.isnan(since) else math.nan)


def held_text(h: Held, clock: Clock) -> str:
    if math.isnan(h.held_s):
        return ""
    since = f", since {clock(h.since)}" if not math.isnan(h.since) else ""
    return f"held {duration(h.held_s)}{since}"


def tick_alert(state: State, now: float, clock: Clock) -> str | None:
    """Markdown when the control loop is failing or has gone quiet; None when it works."""
    t = state.tick
    if t is not None and t.failing:
        error = markdown_text(t.last_error.strip()) or "(no message)"
        at = f" at {clock(t.last_error_at)}" if not math.isnan(t.last_error_at) else ""
        if math.isnan(t.last_ok_at):
            good = "No tick has succeeded yet, so nothing below is current."
        else:
            good = (
                f"The last good tick was at {clock(t.last_ok_at)} "
                f"({duration(now - t.last_ok_at)} ago): the numbers below are from then."
            )
        return (
            f"**The controller's ticks are failing**: {t.consecutive_failures} in a row, "
            f"{t.failures_total} since it started. Last error{at}: {error}. {good}"
        )
    period = state.tick_s if state.tick_s > 0 else 1.0
    age = now - state.last_tick_at
    if not math.isnan(age) and age > max(QUIET_MIN_S, QUIET_TICKS * period):
        return (
            f"**No controller tick for {duration(age)}** (the last at "
            f"{clock(state.last_tick_at)}; it ticks every {period:g} s): the numbers below "
            "are from then."
        )
    return None


def control_alerts(state: State) -> list[str]:
    """Markdown lines when the control document cannot be read or used, or when this
    controller is the standby of another one; none when all is well."""
    lines = []
    if state.control_error:
        lines.append(
            "**The control document cannot be read**: "
            f"{markdown_text(state.control_error.strip())}. Replicas keep what they last "
            "applied; the knobs and modes shown are the controller's last good copy"
            + (" (stale)" if state.control_stale else "")
            + ", and nothing is published until Redis answers or an operator write "
            "repairs the document."
        )
    if state.lease_held is False:
        holder = markdown_text(state.lease_holder) or "another controller"
        lines.append(
            f"**This controller is on standby**: {holder} holds the writers' lease. This "
            "one reads and decides but writes nothing; operator writes here are refused "
            "(409) until it takes over."
        )
    return lines


def disobeying(state: State, now: float, clock: Clock) -> list[str]:
    """One line per replica that does not apply what the controller publishes."""
    lines = []
    for name, replica in sorted(state.replicas.items()):
        o = replica.obedience
        if o is None or o.obeying:
            continue
        applied = "none" if o.applied_version is None else str(o.applied_version)
        published = "?" if o.published_version is None else str(o.published_version)
        since = (
            f" since {clock(o.disobeying_since)} ({duration(now - o.disobeying_since)})"
            if not math.isnan(o.disobeying_since)
            else ""
        )
        lines.append(
            f"**{name} does not apply the control plane**{since}: it reports control "
            f"version {applied}, the controller published {published}. It keeps enforcing "
            "its own knobs; the controller's decisions for it are marked not applied."
        )
    return lines
