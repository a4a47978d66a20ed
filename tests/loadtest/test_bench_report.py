"""The controller benchmark's report writer: report.md, offline HTML plots and PNGs."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from surgeguard_loadtest.bench.spike_report import DASH, find_browser, series, write_report

DATA = Path(__file__).parent / "data"
NO_BROWSER = "no Chrome/Chromium on this machine (install chromium or set BROWSER_PATH)"


def window(
    at: float, p99_s: float | None, good: float | None, limit: float | None
) -> dict[str, Any]:
    return {
        "at": at,
        "p99_s": p99_s,
        "admitted_per_s": good,
        "good_per_s": good,
        "limit": limit,
        "rejected_per_s": 0.0,
    }


def policy(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "capacity_rps": 200.0,
        "offered_rps": 1000.0,
        "goodput_rps": 150.0,
        "goodput_ratio": 0.75,
        "p50_ms": 120.0,
        "p99_ms": 400.0,
        "slo_window_share": 0.5,
        "time_to_slo_s": None,
        "recovery_s": None,
        "rejected": {},
        "errors": 0,
        "limit_before": 64.0,
        "limit_min": 16.0,
        "client_side": {"statuses": {"200": 10}, "sent": 10},
    }
    return base | fields


def synthetic() -> dict[str, Any]:
    """Three policies over a 10 s spike; gaps (None, NaN, -inf) like a real run can have."""
    none_windows = [window(-2.0, 0.05, 100.0, 10_000.0)]
    none_windows += [window(t, 3.0 + t, 2.0, 10_000.0) for t in range(1, 12)]
    none_windows.append(window(12.0, None, None, 10_000.0))  # no traffic: no p99
    aimd_windows = [window(-math.inf, 0.05, 100.0, 64.0)]  # the older format's pre-spike stamp
    aimd_windows += [window(t, 0.2, 190.0, 64.0 - 4 * t) for t in range(1, 11)]
    aimd_windows += [window(11.0, math.nan, 120.0, None), window(12.0, 0.06, 100.0, 40.0)]
    return {
        "scenario": "spike",
        "slo_p99_ms": 250.0,
        "capacity_rps": 200.0,
        "phases": {"capacity_s": 2, "pre_s": 2, "spike_s": 10, "post_s": 2},
        "command": "surgeguard bench --quick",
        "policies": {
            "none": policy(
                goodput_rps=4.2, goodput_ratio=0.021, p50_ms=7152.5, p99_ms=9943.1,
                slo_window_share=0.0, errors=13165, limit_before=10_000.0,
                windows=none_windows,
            ),
            "static": policy(p99_ms=None, rejected={"queue_full": 900, "queue_timeout": 1200},
                             windows=[]),
            "aimd": policy(
                goodput_rps=170.0, goodput_ratio=0.85, p50_ms=130.4, p99_ms=240.0,
                p99_ms_settled=1204.5, slo_window_share=0.97, time_to_slo_s=1.8, recovery_s=None,
                rejected={"queue_full": 46993, "queue_timeout": 12}, windows=aimd_windows,
            ),
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One write_report call shared by the tests (the PNG export starts a browser)."""
    out = tmp_path_factory.mktemp("bench")
    return out, write_report(synthetic(), out)


def row(markdown: str, name: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))


def trace_names(html: str) -> set[str]:
    """The names of the traces in a plotly HTML page (JSON-decoded: "/" is escaped there)."""
    return {json.loads(f'"{name}"') for name in re.findall(r'"name":"((?:[^"\\]|\\.)*)"', html)}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels from a PNG's IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_the_table_has_a_row_per_policy_with_its_numbers(report: tuple[Path, list[Path]]) -> None:
    md = (report[0] / "report.md").read_text()
    assert md.startswith("# Controller benchmark: spike")
    assert "Command: `surgeguard bench --quick`" in md
    assert "p99 ≤ 250 ms" in md and "capacity 200.0 requests/s" in md and "spike 10 s" in md
    assert row(md, "none") == (
        f"| none | 4.2 | 0.021 | 7,152.5 | 9,943.1 | {DASH} | 0.00 | {DASH} | {DASH} | 13,165 | 0 |"
    )
    assert row(md, "aimd") == (
        f"| aimd | 170.0 | 0.850 | 130.4 | 240.0 | 1,204.5 | 0.97 | 1.8 | {DASH} | 0 "
        "| 47,005 (queue_full 46,993, queue_timeout 12) |"
    )
    # a missing p99 is a dash; rejections: the total, then by reason, most first
    assert row(md, "static") == (
        f"| static | 150.0 | 0.750 | 120.0 | {DASH} | {DASH} | 0.50 | {DASH} | {DASH} | 0 "
        "| 2,100 (queue_timeout 1,200, queue_full 900) |"
    )
    assert "server-side measurements" in md and "client-side counts are in summary.json" in md


def test_targets_say_plainly_which_are_not_met(report: tuple[Path, list[Path]]) -> None:
    md = (report[0] / "report.md").read_text()
    targets = md.split("## Targets (aimd)")[1].split("##")[0]
    assert "- goodput ratio ≥ 0.9: 0.850 — **NOT met**" in targets
    assert "- share of 1 s windows within SLO ≥ 0.95: 0.97 — met" in targets
    assert (
        f"- recovery ≤ 30 s: {DASH} (the limit was not back within the run) — **NOT met**"
        in targets
    )


def test_no_targets_section_without_aimd(tmp_path: Path) -> None:
    summary = synthetic()
    del summary["policies"]["aimd"]
    write_report(summary, tmp_path, browser=str(tmp_path / "no-such-browser"))
    md = (tmp_path / "report.md").read_text()
    assert "| none |" in md and "Targets" not in md


def test_html_plots_name_every_policy_and_open_offline(report: tuple[Path, list[Path]]) -> None:
    plots = report[0] / "plots"
    latency = (plots / "latency.html").read_text()
    assert trace_names(latency) == {"none", "static", "aimd", "SLO p99 250 ms"}
    goodput = (plots / "goodput.html").read_text()
    assert trace_names(goodput) == {"none", "static", "aimd", "capacity 200 requests/s"}
    assert '"type":"log"' in latency  # "none" reaches seconds
    assert '"text":"spike (10 s)"' in latency
    # plotly.js from beside the page, not from a CDN
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in latency
    assert "cdn.plot.ly" not in latency
    assert (plots / "plotly.min.js").stat().st_size > 1_000_000
    assert plots / "plotly.min.js" in report[1]


def test_the_limit_plot_leaves_out_policies_without_a_limit(
    report: tuple[Path, list[Path]],
) -> None:
    limit = (report[0] / "plots" / "limit.html").read_text()
    assert trace_names(limit) == {"aimd"}  # static has no windows, none no limit
    assert "not drawn, no concurrency limit: none, static" in limit


def test_pngs_are_real_images(report: tuple[Path, list[Path]]) -> None:
    if find_browser() is None:
        pytest.skip(NO_BROWSER)
    out, written = report
    for name in ("latency", "goodput", "limit"):
        png = out / "plots" / f"{name}.png"
        assert png in written
        assert png_size(png) == (1000, 450)
        assert png.stat().st_size > 10_000  # lines and text, not a blank canvas
    md = (out / "report.md").read_text()
    assert "![latency](plots/latency.png)" in md
    assert "[latency, interactive](plots/latency.html)" in md


def test_without_a_browser_the_report_says_so_and_keeps_the_html(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium to be found
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "latency.png").write_bytes(b"an earlier run's")
    written = write_report(synthetic(), tmp_path)
    assert not list((tmp_path / "plots").glob("*.png"))
    assert {p.name for p in written} == {
        "report.md", "plotly.min.js", "latency.html", "goodput.html", "limit.html",
    }  # fmt: skip
    md = (tmp_path / "report.md").read_text()
    assert "PNG plots were not written (no Chrome/Chromium found" in md
    assert "](plots/latency.png)" not in md and "(plots/latency.html)" in md
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench report: PNG plots skipped:")


def test_a_browser_that_fails_is_a_warning_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    written = write_report(synthetic(), tmp_path, browser=str(broken))
    assert not [p for p in written if p.suffix == ".png"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"kaleido with {broken} failed" in err


def test_series_leaves_gaps_and_drops_windows_without_a_time() -> None:
    policy = {
        "windows": [
            {"at": -math.inf, "p99_s": 0.1},
            {"at": 1.0, "p99_s": 0.25},
            {"at": 2.0, "p99_s": None},
            {"at": 3.0, "p99_s": math.nan},
            {"at": 4.0, "p99_s": "slow"},
            {"at": None, "p99_s": 0.1},
            {"at": 5.0},
        ]
    }
    assert series(policy, "p99_s", 1000.0) == (
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [250.0, None, None, None, None],
    )
    assert series({"windows": None}, "p99_s") == ([], [])


def test_a_bare_summary_still_makes_a_report(tmp_path: Path) -> None:
    summary: dict[str, Any] = {"policies": {"aimd": {"slo_window_share": math.inf}}}
    write_report(summary, tmp_path, browser=str(tmp_path / "no-such-browser"))
    md = (tmp_path / "report.md").read_text()
    assert "| aimd |" + f" {DASH} |" * 9 in md
    assert f"share of 1 s windows within SLO ≥ 0.95: {DASH} (not measured) — **NOT met**" in md


def test_the_older_summary_format_from_a_real_run(tmp_path: Path) -> None:
    # bench-out/controller.json trimmed: every 4th window; pre-spike windows stamped -inf
    summary = json.loads((DATA / "controller-summary-v1.json").read_text())
    write_report(summary, tmp_path, browser=str(tmp_path / "no-such-browser"))
    md = (tmp_path / "report.md").read_text()
    assert row(md, "aimd") == (
        f"| aimd | 194.9 | 0.990 | 132.4 | 320.8 | {DASH} | 1.00 | 1.8 | 6.0 | 0 "
        "| 47,005 (queue_full 46,993, queue_timeout 12) |"
    )
    assert row(md, "gradient").split(" | ")[8] == DASH  # recovery: null
    assert md.count("— met") == 3 and "NOT met" not in md
    goodput = (tmp_path / "plots" / "goodput.html").read_text()
    assert {"none", "static", "aimd", "gradient"} < trace_names(goodput)
