"""The controller benchmark's report: ``report.md`` (one table row per policy, the aimd
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

DASH = "\u2013"  # en dash: a missing value in the table
UNLIMITED = 10_000.0  # a limit this high is no limit: the "none" policy
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_WIDTH, PNG_HEIGHT = 1000, 450  # pixels
PNG_TIMEOUT_S = 60.0  # per image; a healthy render takes a fraction of a second
COLOURS = {"none": "#e45756", "static": "#f58518", "aimd": "#4c78a8", "gradient": "#54a24b"}
# the table's columns after the policy: (heading, field, format); "rejected" comes last
COLUMNS = (
    ("goodput/s", "goodput_rps", ",.1f"),
    ("goodput ratio", "goodput_ratio", ".3f"),
    ("p50 ms", "p50_ms", ",.1f"),
    ("p99 ms", "p99_ms", ",.1f"),
    ("p99 ms after 5 s", "p99_ms_settled", ",.1f"),  # once the policy has had time to act
    ("1 s windows within SLO", "slo_window_share", ".2f"),
    ("time to SLO s", "time_to_slo_s", ".1f"),
    ("recovery s", "recovery_s", ".1f"),
    ("errors", "errors", ",.0f"),
)
# the aimd policy's targets: (field, label, at least?, bound, unit, format)
TARGETS = (
    ("goodput_ratio", "goodput ratio", True, 0.9, "", ".3f"),
    ("slo_window_share", "share of 1 s windows within SLO", True, 0.95, "", ".2f"),
    ("recovery_s", "recovery", False, 30.0, " s", ".1f"),
)

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
        xaxis_title="seconds since the spike started",
        yaxis_title=y_title,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        margin={"t": 80 if note else 50},
        hovermode="x unified",
    )
    if (length := spike_s(summary)) is not None:
        fig.add_vrect(
            x0=0, x1=length, fillcolor="#f2b6b6", opacity=0.3, line_width=0, layer="below",
            annotation_text=f"spike ({length:g} s)", annotation_position="top left",
        )  # fmt: skip
    return fig


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
    """The Markdown table, one row per policy."""
    lines = [
        "| policy | " + " | ".join(head for head, _, _ in COLUMNS) + " | rejected |",
        "|---|" + "--:|" * len(COLUMNS) + "---|",
    ]
    for name, p in policies(summary).items():
        cells = [name, *(fmt(p.get(key), spec) for _, key, spec in COLUMNS)]
        cells.append(rejected_cell(p.get("rejected")))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def targets(policy: Summary) -> list[str]:
    """One line per target: its bound, the measured value, met or NOT met."""
    lines = []
    for field, label, at_least, bound, unit, spec in TARGETS:
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


def markdown(summary: Summary, plots: list[str], png_problem: str | None) -> str:
    """The whole report.md: header, table, aimd targets, plots."""
    scenario = summary.get("scenario") or DASH
    lines = [f"# Controller benchmark: {scenario}", ""]
    if isinstance(command := summary.get("command"), str) and command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Scenario **{scenario}**; SLO: admitted p99 ≤ {fmt(summary.get('slo_p99_ms'), 'g')} ms; "
        f"measured capacity {fmt(summary.get('capacity_rps'), ',.1f')} requests/s; "
        f"spike {fmt(spike_s(summary), 'g')} s.",
        "",
        *table(summary),
        "",
        "These are server-side measurements (latency of admitted requests, in 1 s windows); "
        "client-side counts are in summary.json.",
        "",
    ]
    if (aimd := policies(summary).get("aimd")) is not None:
        lines += ["## Targets (aimd)", "", *targets(aimd), ""]
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
