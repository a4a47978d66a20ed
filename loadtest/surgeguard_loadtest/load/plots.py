"""The load run's own report, next to Locust's ``report.html``: one offline HTML page
with the verdict per phase and five charts over the run's one-second server windows,
sharing one time axis (seconds on Locust's clock) with the phases drawn as bands:

1. admitted p99 against the SLO line (log axis);
2. goodput (answered within the SLO), admitted and offered per second, and the
   deliberate 503s;
3. shed per second by the door's reason (stacked);
4. the concurrency limit, the queue limit and the peak in flight;
5. the degradation modes, a bar while each is on: the controller's own (what it
   published, when the run had ``--controller``), else what the replica reported
   (``surgeguard_mode_active``).

Input is the run's summary dict (``surgeguard_loadtest.load.run``); any number may be missing or
None (a gap). plotly.js is written beside the page (``bench_report``), so the page
opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from surgeguard.reasons import REJECTION_REASONS
from surgeguard_loadtest.bench.spike_report import level_line, num, write_plotly_bundle
from surgeguard_loadtest.load.report import REPORT_HTML

ROWS = (
    "admitted p99 (ms, log)",
    "requests/s",
    "shed/s by reason",
    "limit (in flight)",
    "",  # the modes: their names are the axis
)
PHASE_COLOURS = ("#9ecae1", "#f2b6b6", "#c7e9c0", "#fdd0a2", "#dadaeb", "#d9d9d9")
# no colour of another series: each line, band and reason is told apart at a glance
REASON_COLOURS = (
    "#e45756", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#72b7b2", "#f7b6d2", "#bab0ac",
)  # fmt: skip
LEVEL_COLOURS = {"SURVIVED": "#2ca02c", "DEGRADED": "#ff7f0e", "FAILED": "#d62728"}
Summary = Mapping[str, Any]


def _windows(summary: Summary) -> list[Mapping[str, Any]]:
    raw = summary.get("windows")
    return [w for w in raw if isinstance(w, Mapping)] if isinstance(raw, list) else []


def _column(windows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [num(w.get(key)) for w in windows]


def mode_spans(summary: Summary) -> tuple[str, list[tuple[str, float, float]]]:
    """(where the modes came from, [(mode, on at, off at)]) in seconds on the run's
    clock: the controller's samples when there are any, else the replica's windows."""
    samples: list[tuple[float, Sequence[str]]] = []
    source = "the controller's published modes"
    controller = summary.get("modes")
    if isinstance(controller, list) and controller:
        samples = [(float(s["at"]), s.get("modes") or ()) for s in controller]
    else:
        source = "the replica's surgeguard_mode_active"
        samples = [(float(w["at"]), w.get("modes_active") or ()) for w in _windows(summary)]
    spans: list[tuple[str, float, float]] = []
    on: dict[str, float] = {}
    for at, modes in samples:
        for mode in modes:
            on.setdefault(str(mode), at)
        for mode in [m for m in on if m not in modes]:
            spans.append((mode, on.pop(mode), at))
    end = samples[-1][0] if samples else 0.0
    spans += [(mode, start, end) for mode, start in on.items()]
    return source, sorted(spans, key=lambda s: (s[1], s[0]))


def figure(summary: Summary) -> go.Figure:
    """The five charts, one above the other on one time axis."""
    fig = make_subplots(
        rows=len(ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.04,
        row_heights=[0.26, 0.24, 0.2, 0.18, 0.12],
    )  # fmt: skip
    windows = _windows(summary)
    xs = [float(w["at"]) for w in windows]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)

    def line(row: int, key: str, name: str, colour: str, dash: str = "solid") -> None:
        ys = _column(windows, key)
        if key == "p99_ms":  # a log axis has no place for 0
            ys = [y if y is not None and y > 0 else None for y in ys]
        trace = go.Scatter(
            x=xs, y=ys, name=name, mode="lines", line={"color": colour, "dash": dash}
        )
        fig.add_trace(trace, row=row, col=1)

    line(1, "p99_ms", "admitted p99", "#4c78a8")
    slo = num((summary.get("slo") or {}).get("p99_ms"))
    if slo is not None and slo > 0:
        level_line(fig, x0, x1, slo, f"SLO p99 {slo:g} ms", "#d62728", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=1)

    line(2, "good_per_s", "goodput (within the SLO)", "#2ca02c")
    line(2, "admitted_per_s", "admitted", "#17becf", "dot")
    line(2, "offered_per_s", "offered", "#7f7f7f", "dash")
    line(2, "unavailable_per_s", "deliberate 503", "#9467bd", "dashdot")

    reasons = sorted(
        {str(r) for w in windows for r in (w.get("rejected_by_reason") or {})},
        key=lambda r: (REJECTION_REASONS.index(r) if r in REJECTION_REASONS else 99, r),
    )
    for i, reason in enumerate(reasons):
        ys = [float((w.get("rejected_by_reason") or {}).get(reason, 0.0)) for w in windows]
        colour = REASON_COLOURS[i % len(REASON_COLOURS)]
        trace = go.Scatter(
            x=xs, y=ys, name=f"shed: {reason}", mode="lines", stackgroup="shed",
            line={"color": colour, "width": 0.5},
        )  # fmt: skip
        fig.add_trace(trace, row=3, col=1)
    if not reasons:
        line(3, "rejected_per_s", "shed", "#e45756")

    line(4, "limit", "concurrency limit", "#8c564b")
    line(4, "queue_limit", "queue limit", "#f58518", "dash")
    line(4, "peak_in_flight", "peak in flight", "#bcbd22", "dot")

    source, spans = mode_spans(summary)
    for mode, start, end in spans:
        trace = go.Scatter(
            x=[start, end], y=[mode, mode], mode="lines", name=f"mode {mode}",
            line={"width": 10, "color": "#637939"}, showlegend=False,
            hovertemplate=f"{mode}: on {start:g} s to {end:g} s<extra></extra>",
        )  # fmt: skip
        fig.add_trace(trace, row=5, col=1)
    fig.add_annotation(
        text=f"modes, from {source}" + ("" if spans else ": none was switched on"),
        x=0, y=1.0, xref="x5 domain", yref="y5 domain", xanchor="left", yanchor="bottom",
        showarrow=False, font={"size": 11},
    )  # fmt: skip
    if not spans:
        fig.update_yaxes(showticklabels=False, row=5, col=1)

    _phase_bands(fig, summary)
    for row, title in enumerate(ROWS[:-1], start=1):
        fig.update_yaxes(title_text=title, row=row, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=4, col=1)
    fig.update_xaxes(title_text="seconds since the load started", row=len(ROWS), col=1)
    fig.update_layout(
        template="plotly_white", height=1100, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "top", "y": -0.06, "x": 0},
        margin={"t": 30},
    )  # fmt: skip
    return fig


def _phase_bands(fig: go.Figure, summary: Summary) -> None:
    """Each judged phase as a band over every chart, named (with its verdict) on top."""
    levels = {v.get("phase"): v.get("level") for v in summary.get("verdicts") or ()}
    for i, phase in enumerate(summary.get("phases") or ()):
        start, end = num(phase.get("start_s")), num(phase.get("end_s"))
        if start is None or end is None:
            continue
        name = str(phase.get("name"))
        label = f"{name}: {levels[name]}" if levels.get(name) else name
        fig.add_vrect(
            x0=start, x1=end, fillcolor=PHASE_COLOURS[i % len(PHASE_COLOURS)], opacity=0.25,
            line_width=0, layer="below", row="all", col=1,
        )  # fmt: skip
        colour = LEVEL_COLOURS.get(str(levels.get(name)), "#333")
        fig.add_annotation(
            text=label, x=(start + end) / 2, y=1.0, xref="x", yref="paper", yanchor="bottom",
            showarrow=False, font={"size": 11, "color": colour},
        )  # fmt: skip


def page(summary: Summary, fig: go.Figure) -> str:
    """The whole HTML page: what ran, the SLO, the verdicts, the charts."""
    e = html.escape
    slo = summary.get("slo") or {}
    verdicts = "".join(
        f'<li style="color:{LEVEL_COLOURS.get(str(v.get("level")), "#333")}">'
        f"{e(str(v.get('line')))}</li>"
        for v in summary.get("verdicts") or ()
    )
    head = (
        f"{e(str(summary.get('scenario')))}: up to {e(str(summary.get('users')))} users for "
        f"{e(str(summary.get('duration_s')))} s against {e(str(summary.get('host')))}; "
        f"SLO admitted p99 &le; {e(str(slo.get('p99_ms')))} ms; baseline phase: "
        f"{e(str(slo.get('baseline_phase') or '(none)'))}"
    )
    chart = fig.to_html(full_html=False, include_plotlyjs=False)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>surgeguard load: {e(str(summary.get('scenario')))}</title>"
        '<script src="plotly.min.js"></script>'
        "<style>body{font-family:sans-serif;margin:1.5em}li{margin:.2em 0}</style>"
        f"</head><body><h1>Load run: the verdict</h1><p>{head}</p><ul>{verdicts}</ul>"
        "<p>Server-side, from the replica's /metrics in 1 s windows; Locust's own view is in "
        '<a href="report.html">report.html</a>.</p>'
        f"{chart}</body></html>\n"
    )


def write_report(summary: Summary, out: Path) -> Path:
    """Writes ``out/REPORT_HTML`` (and plotly.js beside it); returns the page's path."""
    write_plotly_bundle(out)
    path = out / REPORT_HTML
    path.write_text(page(summary, figure(summary)), encoding="utf-8")
    return path
