"""The overlapping-labels check itself (issue 16): pure on made-up boxes, then in a real
headless Chromium on pages of one Plotly figure each (no server: a file with plotly.js
inlined). A figure whose legend is forced over its title fails the check, which is what
makes the dashboard's screenshot test worth something; the dashboard's own figures pass
it at the widths a chart has in 1280 and 1920 px wide windows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import plotly
import pytest
import streamlit  # noqa: F401 - sets Streamlit's Plotly template, as in the dashboard

from surgeguard_dashboard import bands, door, figures, jobs
from surgeguard_dashboard.model import Signals, Tick
from tests.dashboard.labels import BOXES_JS, CUT_OFF_JS, collisions, kinds
from tests.dashboard.recorded import Recording

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
# A chart's width in the dashboard: half the main column beside the sidebar, or all of it.
WIDTHS_PX = (430, 790, 1540)


def _box(kind: str, x: float, y: float, w: float = 50, h: float = 12, **over: Any) -> Any:
    box = {"chart": "c", "kind": kind, "text": kind, "x": x, "y": y, "w": w, "h": h}
    return box | {"fx": 0, "fy": 0, "fw": 500, "fh": 300} | over


def test_labels_that_overlap_or_stick_out_are_named_and_touching_ones_are_not() -> None:
    assert collisions([_box("legend", 10, 10), _box("title", 40, 15)]) == [
        "c: legend 'legend' overlaps title 'title'"
    ]
    assert collisions([_box("legend", 10, 10), _box("title", 60, 10)]) == []  # side by side
    assert collisions([_box("tick", 10, 10), _box("tick", 20, 12)]) == []  # Plotly's own
    assert collisions([_box("tick", 10, 10), _box("legend", 20, 12)]) != []
    assert collisions([_box("annotation", 480, 10)]) == [
        "c: annotation 'annotation' is clipped by its chart's edge"
    ]
    other_chart = _box("title", 40, 15, chart="d")
    assert collisions([_box("legend", 10, 10), other_chart]) == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None or sync_playwright is None:
        pytest.skip("no Chromium or no playwright (CI installs Debian's chromium package)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _boxes(browser: Browser, figs: Sequence[Any], width: int, tmp_path: Path) -> list[Any]:
    """The label boxes of ``figs``, each drawn ``width`` px wide, one under another on
    one page (plotly.js loaded once, from the plotly package)."""
    charts = "\n".join(
        f'<div style="width:{width}px">'
        + fig.to_html(full_html=False, include_plotlyjs=False, default_width=width)
        + "</div>"
        for fig in figs
    )
    page_file = tmp_path / f"figures-{width}.html"
    script = f'<script src="{PLOTLY_JS.as_uri()}"></script>'
    page_file.write_text(f"<html><head>{script}</head><body>{charts}</body></html>")
    page = browser.new_page(viewport={"width": width + 40, "height": 900})
    try:
        page.goto(page_file.as_uri())
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {2 * len(figs)}"
        )
        boxes: list[Any] = page.evaluate(BOXES_JS)
        return boxes
    finally:
        page.close()


@pytest.mark.slow
def test_a_legend_forced_over_the_title_fails_the_check(browser: Browser, tmp_path: Path) -> None:
    ticks = _history()
    fig = figures.latency_figure(ticks, None, 0.25)
    fig.update_layout(legend={"yref": "container", "y": 1, "yanchor": "top", "x": 0})
    found = collisions(_boxes(browser, [fig], 790, tmp_path))
    assert any("legend" in f and "overlaps title" in f for f in found), found


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS_PX)
def test_the_dashboards_figures_have_no_colliding_labels(
    browser: Browser, tmp_path: Path, width: int
) -> None:
    ticks = _history()
    signals = ticks[-1].aggregate or Signals()
    figs = [
        bands.band_figure(ticks),
        figures.latency_figure(ticks, None, 0.25),
        figures.throughput_figure(ticks, None),
        figures.saturation_figure(ticks, None),
        figures.bottleneck_figure(signals, {"db": 9.5, "cache": 1.2}, "db"),
        figures.bottleneck_figure(  # the longest title it can have
            signals, {}, "recommendations", named=False, elsewhere="rejection work"
        ),
        figures.controller_figure(ticks, None),
        jobs.jobs_figure(ticks, None),
        door.door_figure(ticks, None),
    ]
    for fig in figs[1:]:
        bands.mark_bottlenecks(fig, ticks, 0.0)
    raw = _boxes(browser, figs, width, tmp_path)
    assert {r["chart"] for r in raw} == {f.layout.title.text for f in figs}
    assert {"title", "tick", "legend", "annotation", "axis title"} <= kinds(raw)
    found = collisions(raw)
    assert not found, "\n".join([f"at {width} px:", *found])


def _history() -> list[Tick]:
    recording = Recording(1_800_000_000.0)
    return [Tick.parse(p) for p in recording.history]


@pytest.mark.slow
def test_a_strip_value_cut_off_with_an_ellipsis_is_found(browser: Browser) -> None:
    """The same check as the dashboard's browser test, on two metrics as Streamlit
    draws a value (one line, hidden overflow, an ellipsis): only the long one is cut."""
    box = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;width:90px"
    metric = '<div data-testid="stMetric"><div style="{box}">{text}</div></div>'
    page = browser.new_page()
    try:
        page.set_content(
            metric.format(box=box, text="427/s")
            + metric.format(box=box, text="of 428 req/s offered")
        )
        assert page.evaluate(CUT_OFF_JS) == ["of 428 req/s offered"]
    finally:
        page.close()
