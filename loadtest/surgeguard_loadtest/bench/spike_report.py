"""The controller benchmark's report: ``report.md`` (one table row per policy, the
shape's columns; for the spike surgeguard's ratios to the best peer; the aimd
targets) and three plots over time (admitted p99, goodput, concurrency limit), each as
offline HTML and as PNG.

Input is the benchmark's summary dict (see ``surgeguard_loadtest.bench.spike``). Any number may
be missing, None, NaN or infinite: tables show a dash and plots leave a gap. PNGs are
drawn by kaleido in a system Chrome/Chromium; without one the HTML is still written and
the report says the PNGs are missing.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# plotly ships no type information (no py.typed): its objects are Any to mypy.
import plotly.graph_objects as go  # type: ignore[import-untyped]
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

from surgeguard_loadtest.bench import columns, ratios

DASH = "\u2013"  # en dash: a missing value in the table
UNLIMITED = 10_000.0  # a limit this high is no limit: the "none" policy
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_WIDTH, PNG_HEIGHT = 1000, 450  # pixels
PNG_TIMEOUT_S = 60.0  # per image; a healthy render takes a fraction of a second
COLOURS = {
    "none": "#e45756",
    "static": "#f58518",
    "static-best": "#b279a2",
    "aimd": "#4c78a8",
    "inner": "#1f3a93",
    "gradient": "#54a24b",
    "envoy": "#eeca3b",
    "vegas": "#72b7b2",
    "netflix-aimd": "#ff9da6",
    "gradient2": "#9d755d",
}
COLUMNS = columns.SPIKE  # the spike's table (other shapes: columns.for_shape)
# surgeguard's targets per shape: (field, label, at least?, bound, unit, format)
TARGETS_BY_SHAPE = {
    "spike": (
        ("goodput_ratio", "goodput ratio", True, 0.9, "", ".3f"),
        ("slo_window_share", "share of 1 s windows within SLO", True, 0.95, "", ".2f"),
        ("recovery_s", "recovery", False, 30.0, " s", ".1f"),
    ),
    "square": (("largest_move_share", "largest one-window move / range", False, 0.5, "", ".2f"),),
    "drift": (
        ("recovery_s", "limit back to 90% after the db recovered", False, 30.0, " s", ".1f"),
    ),
}
TARGETS = TARGETS_BY_SHAPE["spike"]

Summary = Mapping[str, Any]  # the benchmark's summary dict, or one policy's part of it
Series = tuple[list[float], list[float | None]]  # x, y (None: a gap)
Traces = Mapping[str, Series]  # by policy name


def write_report(summary: Summary, out: Path, *, browser: str | None = None) -> list[Path]:
    """Writes out/report.md, out/plots/<name>.html and out/plots/<name>.png; returns the
    paths written. ``browser``: the Chrome/Chromium for the PNGs (default: ``find_browser``).
    A failed PNG export is a warning on stderr and a line in report.md, never an error."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = {
        "latency": latency_figure(summary),
        "goodput": goodput_figure(summary),
        "limit": limit_figure(summary),
    }
    written = [write_plotly_bundle(plots)]
    for name, fig in figures.items():
        fig.write_html(plots / f"{name}.html", include_plotlyjs="directory")
        written.append(plots / f"{name}.html")
    pngs = {name: plots / f"{name}.png" for name in figures}
    for stale in pngs.values():  # an earlier run's PNG must not pass for this run's
        stale.unlink(missing_ok=True)
    problem = write_pngs(figures, pngs, find_browser(browser))
    if problem is None:
        written.extend(pngs.values())
    else:
        print(f"bench report: PNG plots skipped: {problem}", file=sys.stderr)
    (out / "report.md").write_text(markdown(summary, list(figures), problem), encoding="utf-8")
    return [out / "report.md", *written]


def write_plotly_bundle(directory: Path) -> Path:
    """plotly.js as ``directory/plotly.min.js``, for pages written with
    ``include_plotlyjs="directory"``: one copy beside the pages instead of 4.6 MB inlined
    into each, and no CDN, so they open offline; rewritten each time so it matches the
    plotly that drew them."""
    bundle = directory / "plotly.min.js"
    bundle.write_text(get_plotlyjs(), encoding="utf-8")
    return bundle


# -- PNG export ------------------------------------------------------------------------


def find_browser(configured: str | None = None) -> str | None:
    """The Chrome/Chromium for kaleido: ``configured``, else $BROWSER_PATH (the setting
    that choreographer, kaleido's browser driver, reads), else the first of ``BROWSERS``
    on PATH; None when there is none."""
    if configured or (configured := os.environ.get("BROWSER_PATH")):
        return configured
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def write_pngs(
    figures: Mapping[str, Any], pngs: Mapping[str, Path], browser: str | None
) -> str | None:
    """Renders every figure to its PNG in one browser session (starting the browser costs
    about a second, each figure a fraction of that). Returns why it could not, or None."""
    if browser is None:
        return f"no Chrome/Chromium found (set BROWSER_PATH or install one of {BROWSERS})"
    try:
        import kaleido  # type: ignore[import-untyped]  # no py.typed either
    except ImportError:
        return "kaleido is not installed"
    opts = {"format": "png", "width": PNG_WIDTH, "height": PNG_HEIGHT}
    specs = [{"fig": fig, "path": pngs[name], "opts": opts} for name, fig in figures.items()]
    # mathjax=False: kaleido would fetch MathJax from a CDN, and these plots have no TeX
    kopts = {"path": browser, "mathjax": False, "timeout": PNG_TIMEOUT_S}
    try:
        kaleido.write_fig_from_object_sync(specs, kopts=kopts)
    except Exception as exc:  # a broken browser must not lose a finished benchmark run
        why = " ".join(str(exc).split())[:300]  # one line on stderr, however long the error
        return f"kaleido with {browser} failed: {type(exc).__name__}: {why}"
    missing = [p.name for p in pngs.values() if not p.is_file() or p.stat().st_size == 0]
    return f"kaleido wrote no {', '.join(missing)}" if missing else None


# -- reading the summary ---------------------------------------------------------------


def num(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, None, NaN, ±inf, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def policies(summary: Summary) -> dict[str, Summary]:
    """Policy name to its results, in the summary's order."""
    raw = summary.get("policies")
    items = raw.items() if isinstance(raw, Mapping) else ()
    return {str(name): p for name, p in items if isinstance(p, Mapping)}


def spike_s(summary: Summary) -> float | None:
    """The spike's length, seconds: from the phases, else the longest per-policy one."""
    phases = summary.get("phases")
    if isinstance(phases, Mapping) and (s := num(phases.get("spike_s"))) is not None:
        return s
    return max(
        (s for p in policies(summary).values() if (s := num(p.get("spike_s")))), default=None
    )


def series(policy: Summary, key: str, scale: float = 1.0) -> Series:
    """x (seconds since the spike started) and the windows' ``key`` times ``scale``, None
    where missing (a gap). Windows without a finite time (older summaries stamp the
    pre-spike ones -inf) have no place on the axis and are left out."""
    windows = policy.get("windows")
    xs: list[float] = []
    ys: list[float | None] = []
    for w in windows if isinstance(windows, list) else []:
        if isinstance(w, Mapping) and (x := num(w.get("at"))) is not None:
            xs.append(x)
            ys.append(None if (y := num(w.get(key))) is None else y * scale)
    return xs, ys


# -- figures ---------------------------------------------------------------------------


def _figure(
    summary: Summary, traces: Traces, title: str, y_title: str, note: str = ""
) -> go.Figure:
    """One line per policy, the spike shaded, the legend below."""
    fig = go.Figure()
    for name, (xs, ys) in traces.items():
        line = {"color": COLOURS.get(name)}
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines", line=line))
    fig.update_layout(
        title={"text": title, "subtitle": {"text": note}, "x": 0},
        template="plotly_white",
        xaxis_title=X_TITLES.get(str(summary.get("shape") or "spike"), X_TITLES["spike"]),
        yaxis_title=y_title,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        margin={"t": 80 if note else 50},
        hovermode="x unified",
    )
    for x0, x1, label in shaded(summary):
        fig.add_vrect(
            x0=x0, x1=x1, fillcolor="#f2b6b6", opacity=0.3, line_width=0, layer="below",
            annotation_text=label, annotation_position="top left",
        )  # fmt: skip
    return fig


def shaded(summary: Summary) -> list[tuple[float, float, str]]:
    """The spans to shade, seconds on the plots' clock: the spike, the square wave's
    "on" phases (from any policy's row), the drift's slow part."""
    shape = summary.get("shape") or "spike"
    rows = list(policies(summary).values())
    if shape == "square":
        spans: list[Any] = next(
            (r["on_spans"] for r in rows if isinstance(r.get("on_spans"), list)), []
        )
        return [(float(a), float(b), "on") for a, b in spans]
    if shape == "drift":
        slow = next((s for r in rows if (s := num(r.get("slow_s"))) is not None), None)
        return [] if slow is None else [(0.0, slow, f"db slower ({slow:g} s)")]
    length = spike_s(summary)
    return [] if length is None else [(0.0, length, f"spike ({length:g} s)")]


X_TITLES = {
    "spike": "seconds since the spike started",
    "square": "seconds since the first 'on'",
    "drift": "seconds since the db began to slow",
}


def _level(fig: go.Figure, traces: Traces, y: float, name: str, colour: str) -> None:
    """A dashed horizontal line across the data, as a trace: a shape's annotation would
    be placed in log10 units on the latency figure's log axis."""
    xs = [x for xs, _ in traces.values() for x in xs] or [0.0]
    level_line(fig, min(xs), max(xs), y, name, colour)


def level_line(
    fig: go.Figure, x0: float, x1: float, y: float, name: str, colour: str, **where: Any
) -> None:
    """A dashed horizontal line from ``x0`` to ``x1`` as a trace (``where``: a subplot's
    ``row`` and ``col``)."""
    line = {"dash": "dash", "color": colour}
    trace = go.Scatter(x=[x0, x1], y=[y, y], name=name, mode="lines", line=line)
    fig.add_trace(trace, **where)


def latency_figure(summary: Summary) -> go.Figure:
    """Admitted p99 (ms, log axis: "none" reaches seconds) per policy, and the SLO."""
    traces = {}
    for name, policy in policies(summary).items():
        xs, ys = series(policy, "p99_s", 1000.0)
        traces[name] = (xs, [y if y is not None and y > 0 else None for y in ys])
    title = "Admitted p99 latency (server-side, 1 s windows)"
    fig = _figure(summary, traces, title, "p99 ms (log)")
    if (slo := num(summary.get("slo_p99_ms"))) is not None and slo > 0:
        _level(fig, traces, slo, f"SLO p99 {slo:g} ms", "#d62728")
    fig.update_yaxes(type="log")
    return fig


def goodput_figure(summary: Summary) -> go.Figure:
    """Requests/s answered within the SLO per policy, and the measured capacity."""
    traces = {name: series(policy, "good_per_s") for name, policy in policies(summary).items()}
    title = "Goodput: requests/s answered within the SLO"
    fig = _figure(summary, traces, title, "good requests/s")
    if (capacity := num(summary.get("capacity_rps"))) is not None:
        _level(fig, traces, capacity, f"capacity {capacity:g} requests/s", "#7f7f7f")
    fig.update_yaxes(rangemode="tozero")
    return fig


def limit_figure(summary: Summary) -> go.Figure:
    """Concurrency limit (requests in flight) per policy; a policy without one (absent or
    at least ``UNLIMITED``: "none") is left out and named in the subtitle."""
    traces = {}
    for name, policy in policies(summary).items():
        xs, ys = series(policy, "limit")
        ys = [y if y is not None and y < UNLIMITED else None for y in ys]
        if any(y is not None for y in ys):
            traces[name] = (xs, ys)
    skipped = [name for name in policies(summary) if name not in traces]
    note = f"not drawn, no concurrency limit: {', '.join(skipped)}" if skipped else ""
    fig = _figure(summary, traces, "Concurrency limit", "limit (requests in flight)", note)
    fig.update_yaxes(rangemode="tozero")
    return fig


# -- report.md -------------------------------------------------------------------------


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash when it is not a finite number."""
    return DASH if (v := num(value)) is None else format(v, spec)


def rejected_cell(rejected: Any) -> str:
    """Rejected requests in all, then per reason, most first: "470 (queue_full 460, ...)"."""
    if not isinstance(rejected, Mapping):
        return DASH
    counts = sorted(
        ((n, str(k)) for k, v in rejected.items() if (n := num(v)) is not None), reverse=True
    )
    parts = ", ".join(f"{k} {n:,.0f}" for n, k in counts)
    return f"{sum(n for n, _ in counts):,.0f}" + (f" ({parts})" if parts else "")


def table(summary: Summary) -> list[str]:
    """The Markdown table, one row per policy, the shape's columns."""
    cols = columns.for_shape(summary.get("shape"))
    lines = [
        "| policy | " + " | ".join(head for head, _, _ in cols) + " | rejected |",
        "|---|" + "--:|" * len(cols) + "---|",
    ]
    for name, p in policies(summary).items():
        cells = [name, *(fmt(p.get(key), spec) for _, key, spec in cols)]
        cells.append(rejected_cell(p.get("rejected")))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def targets(policy: Summary, shape: str = "spike") -> list[str]:
    """One line per target of the shape: its bound, the measured value, met or NOT met."""
    lines = []
    for field, label, at_least, bound, unit, spec in TARGETS_BY_SHAPE.get(shape, TARGETS):
        value = num(policy.get(field))
        met = value is not None and (value >= bound if at_least else value <= bound)
        shown = f"{value:{spec}}{unit}" if value is not None else f"{DASH} (not measured)"
        if field == "recovery_s" and value is None:
            shown = f"{DASH} (the limit was not back within the run)"
        verdict = "met" if met else "**NOT met**"
        lines.append(f"- {label} {'≥' if at_least else '≤'} {bound:g}{unit}: {shown} — {verdict}")
    return lines


def verdict_lines(summary: Summary) -> list[str]:
    """ "- **aimd** spike: DEGRADED: ..." per policy and phase (older summaries: none)."""
    return [
        f"- **{name}** {v['line']}"
        for name, p in policies(summary).items()
        for v in p.get("verdicts") or ()
        if isinstance(v, Mapping) and isinstance(v.get("line"), str)
    ]


def sweep_lines(sweep: Summary) -> list[str]:
    """The static sweep: each limit's settled goodput and p99, and the one chosen."""
    steps = sweep.get("steps")
    lines = [
        "## The static sweep (static-best)",
        "",
        f"Chosen: limit **{fmt(sweep.get('limit'), 'g')}** (the most goodput within the SLO).",
        "",
        "| limit | goodput/s | p99 ms | windows |",
        "|--:|--:|--:|--:|",
    ]
    for limit, s in steps.items() if isinstance(steps, Mapping) else ():
        if isinstance(s, Mapping):
            lines.append(
                f"| {limit} | {fmt(s.get('good_per_s'), ',.1f')} | "
                f"{fmt(s.get('p99_ms'), ',.1f')} | {fmt(s.get('windows'), 'g')} |"
            )
    return lines


def creep_lines(summary: Summary) -> list[str]:
    """Per policy: its admitted p50 before the drift and at the run's end."""
    lines = []
    for name, p in policies(summary).items():
        crept = p.get("baseline_crept")
        word = DASH if crept is None else ("**yes**" if crept else "no")
        lines.append(
            f"- **{name}**: {word} (p50 {fmt(p.get('p50_before_ms'), ',.1f')} ms before, "
            f"{fmt(p.get('p50_end_ms'), ',.1f')} ms at the end; limit at the end "
            f"{fmt(p.get('limit_end_ratio'), '.2f')} of its pre-drift value)"
        )
    return lines


def shape_line(summary: Summary) -> str:
    """The load in a few words: the spike's length and factor, or the other shape's."""
    shape = summary.get("shape") or "spike"
    phases = summary.get("phases")
    phases = phases if isinstance(phases, Mapping) else {}
    if shape == "square":
        return "a square wave: 10 s at 3x the capacity in users, 10 s at half, in turn"
    if shape == "drift":
        return (
            f"twice the capacity in users; the db 3x slower over "
            f"{fmt(phases.get('drift_s'), 'g')} s, then at once back to normal"
        )
    factor = summary.get("factor")
    at = f" at {fmt(factor, 'g')}x the capacity in users" if num(factor) is not None else ""
    return f"spike {fmt(spike_s(summary), 'g')} s{at}"


def markdown(summary: Summary, plots: list[str], png_problem: str | None) -> str:
    """The whole report.md: header, table, aimd targets, plots."""
    scenario = summary.get("scenario") or DASH
    lines = [f"# Controller benchmark: {scenario}", ""]
    if isinstance(command := summary.get("command"), str) and command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Scenario **{scenario}**; SLO: admitted p99 ≤ {fmt(summary.get('slo_p99_ms'), 'g')} ms; "
        f"measured capacity {fmt(summary.get('capacity_rps'), ',.1f')} requests/s; "
        f"{shape_line(summary)}.",
        "",
        *table(summary),
        "",
        "These are server-side measurements (latency of admitted requests, in 1 s windows); "
        "client-side counts are in summary.json.",
        "",
    ]
    shape = str(summary.get("shape") or "spike")
    if shape == "spike" and (found := ratios.markdown(policies(summary))):
        lines += [
            "## surgeguard against the best peer",
            "",
            "Each column's best peer (any policy that is not surgeguard's own) and "
            "surgeguard's value as a ratio to it: above 1 is better for goodput and the "
            "SLO share, below 1 for p99 and time to SLO.",
            "",
            *found,
            "",
        ]
    if isinstance(sweep := summary.get("static_sweep"), Mapping):
        lines += [*sweep_lines(sweep), ""]
    if shape == "drift":
        lines += ["## Did the baseline creep?", "", *creep_lines(summary), ""]
    for name in ("aimd", "inner"):
        if (row := policies(summary).get(name)) is not None:
            lines += [f"## Targets ({name})", "", *targets(row, shape), ""]
    if verdicts := verdict_lines(summary):
        lines += ["## Verdicts per phase", "", *verdicts, ""]
    lines += ["## Plots", ""]
    if png_problem is not None:
        lines += [f"PNG plots were not written ({png_problem}); the HTML plots were.", ""]
    for name in plots:
        if png_problem is None:
            lines += [f"![{name}](plots/{name}.png)", ""]
        lines += [f"[{name}, interactive](plots/{name}.html)", ""]
    return "\n".join(lines)
