"""Load-test drills as the dashboard sees them: the API's records, typed, and where
they fall on a time chart. Pure: no Streamlit, no HTTP.

A drill overlapping a chart's window is drawn as a shaded band from its start to its
end (a running one to the chart's latest point, its "now"), clipped to the window so
an old drill never stretches the time axis, and labelled "drill: <scenario>".
Times are unix seconds on the controller's clock (the clock the charts use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from surgeguard_dashboard.jsonread import integer, num
from surgeguard_dashboard.literal import literal
from surgeguard_dashboard.model import Chaos

DRILL_COLOUR = "#6a3d9a"
RUNNING = "running"


@dataclass(frozen=True)
class Drill:
    """One drill record: ``users`` (most at once) and ``duration_s`` may be unknown
    for a run started outside the controller; ``ended_at`` is NaN while it runs."""

    id: str
    scenario: str
    status: str  # running, finished, stopped, failed, lost
    source: str  # controller or external
    started_at: float
    ended_at: float = math.nan
    users: int | None = None
    duration_s: float = math.nan
    who: str = ""
    reason: str = ""
    exit_code: int | None = None
    error: str = ""
    out_dir: str = ""

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @classmethod
    def parse(cls, raw: Any) -> Drill:
        d = raw if isinstance(raw, Mapping) else {}
        return cls(
            id=str(d.get("id", "")),
            scenario=str(d.get("scenario", "")),
            status=str(d.get("status", "")),
            source=str(d.get("source", "")),
            started_at=num(d.get("started_at")),
            ended_at=num(d.get("ended_at")),
            users=integer(d.get("users")),
            duration_s=num(d.get("duration_s")),
            who=str(d.get("who") or ""),
            reason=str(d.get("reason") or ""),
            exit_code=integer(d.get("exit_code")),
            error=str(d.get("error") or ""),
            out_dir=str(d.get("out_dir") or ""),
        )

    def elapsed_s(self, now: float) -> float:
        """Seconds it has run (until ``now`` while running)."""
        end = now if self.running or math.isnan(self.ended_at) else self.ended_at
        return max(0.0, end - self.started_at)


@dataclass(frozen=True)
class Drills:
    """``GET /api/v1/drills``: scenario defaults, the current drill, recent ones."""

    scenarios: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # users, s
    current: Drill | None = None
    recent: tuple[Drill, ...] = ()  # newest first

    @classmethod
    def parse(cls, raw: Any) -> Drills:
        d = raw if isinstance(raw, Mapping) else {}
        scenarios = d.get("scenarios")
        table = {
            str(name): (integer(v.get("users")) or 1, num(v.get("duration_s")))
            for name, v in (scenarios.items() if isinstance(scenarios, Mapping) else ())
            if isinstance(v, Mapping)
        }
        current = d.get("current")
        recent = d.get("recent")
        return cls(
            scenarios=table,
            current=Drill.parse(current) if isinstance(current, Mapping) else None,
            recent=tuple(Drill.parse(r) for r in recent) if isinstance(recent, list) else (),
        )

    @property
    def own_running(self) -> Drill | None:
        """The drill the controller itself runs (the one Stop can stop)."""
        c = self.current
        return c if c is not None and c.running and c.source == "controller" else None


def seconds(value: float) -> str:
    return "?" if math.isnan(value) else f"{value:.0f} s"


def describe(drill: Drill, now: float) -> str:
    """One line (Markdown): what runs, how far it is (``now``: unix seconds), how many
    users, who started it and why."""
    users = f"{drill.users} users" if drill.users is not None else "users unknown"
    planned = f" of {seconds(drill.duration_s)}" if not math.isnan(drill.duration_s) else ""
    where = "started here" if drill.source == "controller" else "started outside the controller"
    why = f" ({literal(drill.reason)})" if drill.reason else ""  # as typed, never Markdown
    return (
        f"**{drill.scenario}** {drill.status}: {seconds(drill.elapsed_s(now))}{planned}, "
        f"{users}, {where} by {literal(drill.who) or 'unknown'}{why}"
    )


def rows(
    drills: Sequence[Drill], clock: Callable[[float], str], now: float
) -> list[dict[str, Any]]:
    """Recent drills as table rows; ``clock`` turns unix seconds into a time of day."""
    return [
        {
            "started": clock(d.started_at),
            "scenario": d.scenario,
            "status": d.status,
            "users": d.users,
            "ran, s": round(d.elapsed_s(now)),
            "source": d.source,
            "reason": d.reason,
            "error": d.error.strip().splitlines()[-1] if d.error.strip() else "",
        }
        for d in drills
    ]


@dataclass(frozen=True)
class DrillSpan:
    label: str
    start: float  # unix seconds
    end: float
    running: bool


def drill_spans(drills: Sequence[Drill], start: float, end: float) -> list[DrillSpan]:
    """Each drill overlapping [``start``, ``end``] (unix seconds: the chart's first
    and latest points), clipped to it, oldest first; a running drill ends at ``end``."""
    spans = []
    for d in drills:
        if math.isnan(d.started_at):
            continue
        stop = end if d.running or math.isnan(d.ended_at) else d.ended_at
        if d.started_at > end or stop < start:
            continue
        label = f"drill: {d.scenario}" + (" (running)" if d.running else "")
        spans.append(DrillSpan(label, max(d.started_at, start), min(stop, end), d.running))
    return sorted(spans, key=lambda s: s.start)


def band_layout(
    spans: Sequence[DrillSpan], offset_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shapes, annotations) for Plotly: a band with dashed edges per span and its
    label at the top left of the band. x in ms since the epoch, viewer-shifted."""
    shapes: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for span in spans:
        x0, x1 = ((t + offset_s) * 1000.0 for t in (span.start, span.end))
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": x0,
                "x1": x1,
                "y0": 0,
                "y1": 1,
                "fillcolor": DRILL_COLOUR,
                "opacity": 0.10,
                "line": {"color": DRILL_COLOUR, "width": 1, "dash": "dot"},
                "layer": "below",
                "name": span.label,
            }
        )
        labels.append(
            {
                "xref": "x",
                "yref": "paper",
                "x": x0,
                "y": 1,
                "xanchor": "left",
                "yanchor": "top",
                "text": span.label,
                "showarrow": False,
                "font": {"size": 10, "color": DRILL_COLOUR},
                "name": span.label,
            }
        )
    return shapes, labels


def chaos_lines(chaos: Mapping[str, Chaos]) -> list[str]:
    """One line per dependency with chaos on it now, by name: what every replica does
    to its calls on purpose, e.g. "Chaos on db: latency x5, errors 10%". A chaos left on
    by accident (a drill gone wrong, an operator who forgot) must not pass unnoticed."""
    return [
        f"Chaos on {dep}: latency x{c.latency_multiplier:g}, errors {c.error_rate:.0%}. "
        f"Every replica slows or fails its calls to {dep} on purpose; clear it under "
        "Drills (chaos) in the sidebar."
        for dep, c in sorted(chaos.items())
        if not c.is_calm
    ]
