"""What a load run shows and leaves behind, pure: the progress line (Locust's columns
and the server's from one wall-clock second, issue 16), the run's own HTML report and
the modes it draws."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_loadtest.bench.spike import verdicts
from surgeguard_loadtest.bench.spike_report import verdict_lines
from surgeguard_loadtest.load.plots import mode_spans, write_report
from surgeguard_loadtest.load.report import (
    REPORT_HTML,
    aligned,
    progress_line,
    server_peaks,
    window_second,
)
from surgeguard_loadtest.load.watch import Window, window_between

RECORDED = Path(__file__).with_name("data") / "load-summary-spike.json"
START = 1_700_000_000.0  # unix seconds at the run's origin


def window(at: float, admitted: float = 10.0) -> Window:
    return Window(
        at=at, offered_per_s=30, admitted_per_s=admitted, good_per_s=admitted,
        rejected_per_s=20, errors_per_s=0, unavailable_per_s=0, p50_ms=5, p99_ms=40,
        limit=8, queue_limit=4, peak_in_flight=8, rss_mb=50,
    )  # fmt: skip


def test_a_window_stands_for_the_second_it_overlaps_most() -> None:
    assert window_second(START + 10.4) == START + 9  # covers 9.4 .. 10.4
    assert window_second(START + 10.6) == START + 10  # covers 9.6 .. 10.6


def test_the_progress_pairs_a_server_window_with_locusts_count_of_the_same_second() -> None:
    windows = [window(8.6, 1), window(9.6, 2), window(10.6, 3)]
    # Locust has counted up to second 9 (its counts come a second or more late).
    seconds = {int(START) + 8: (80, 50, 0), int(START) + 9: (90, 60, 1)}
    pair = aligned(windows, seconds, lambda at: START + at)
    assert pair == (windows[1], (90, 60, 1))
    line = progress_line(12.0, "spike", 60, {"users": 60}, pair[0], 4.0, pair[1], 2.4)
    assert line == (
        "[   12 s      spike] users 60/60 | 2 s ago | sent 90/s shed 60/s fail 1/s | "
        "server: admitted 2/s of 30/s, p99 40 ms, limit 8 | healthz 4 ms"
    )


def test_without_locusts_count_of_that_second_the_progress_shows_its_totals() -> None:
    windows = [window(1.6)]
    pair = aligned(windows, {}, lambda at: START + at)
    assert pair == (windows[0], None)
    client = {"users": 3, "requests": 1234, "failures": 2, "rps": 777.0}
    line = progress_line(2.0, "baseline", 3, client, pair[0], None, None, 1.0)
    assert "sent 1,234 so far, 2 failed" in line and "777" not in line  # never current_rps
    assert aligned([], {}, lambda at: at) is None


def recorded() -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(RECORDED.read_text())
    return summary


def test_the_html_report_shows_the_verdicts_the_slo_and_the_phases_offline(
    tmp_path: Path,
) -> None:
    summary = recorded()
    page = write_report(summary, tmp_path)
    assert page == tmp_path / REPORT_HTML
    text = page.read_text()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert '<script src="plotly.min.js"></script>' in text and "cdn" not in text.lower()
    for v in summary["verdicts"]:
        assert v["line"].replace("'", "&#x27;") in text
    assert f"SLO p99 {summary['slo']['p99_ms']:g} ms" in text
    for name in ("goodput (within the SLO)", "concurrency limit", "deliberate 503"):
        assert name in text
    reasons = {r for w in summary["windows"] for r in w["rejected_by_reason"]}
    assert reasons and all(f"shed: {r}" in text for r in reasons)
    for phase in summary["phases"]:
        assert re.search(rf"{phase['name']}: (SURVIVED|DEGRADED|FAILED)", text)
    assert 'href="report.html"' in text  # Locust's, next to it


def test_modes_come_from_the_controller_when_it_was_there_else_from_the_replica() -> None:
    windows = [
        {"at": 1.0, "modes_active": []},
        {"at": 2.0, "modes_active": ["shed_sheddable"]},
        {"at": 3.0, "modes_active": ["shed_sheddable", "read_only"]},
        {"at": 4.0, "modes_active": ["read_only"]},
    ]
    source, spans = mode_spans({"windows": windows, "modes": None})
    assert source == "the replica's surgeguard_mode_active"
    assert spans == [("shed_sheddable", 2.0, 4.0), ("read_only", 3.0, 4.0)]
    controller = [{"at": 0.5, "modes": ["serve_stale"]}, {"at": 1.5, "modes": []}]
    source, spans = mode_spans({"windows": windows, "modes": controller})
    assert source == "the controller's published modes"
    assert spans == [("serve_stale", 0.5, 1.5)]


def test_the_bench_prints_and_reports_a_verdict_per_policy_and_phase() -> None:
    run = recorded()
    report = {"slo_p99_ms": 250.0, "policies": {"aimd": {"verdicts": run["verdicts"]}}}
    printed = verdicts(report).splitlines()
    assert printed[0] == "verdicts against the SLO (admitted p99 <= 250 ms):"
    assert printed[1:] == [f"  aimd: {v['line']}" for v in run["verdicts"]]
    assert verdict_lines(report) == [f"- **aimd** {v['line']}" for v in run["verdicts"]]


def test_each_second_keeps_the_limit_the_door_enforced_and_the_replicas_cpu() -> None:
    """The inner loop's limit is read from the replica's gauge, beside the knob's, and
    its CPU from the process counter; a replica that exports neither reads as None, not
    as a limit of 0 or an idle CPU."""

    def scrape(at: float, inner: float | None) -> Scrape:
        text = "# TYPE surgeguard_concurrency_limit gauge\nsurgeguard_concurrency_limit 40\n"
        if inner is not None:  # and 0.6 s of CPU per second since the start
            text += f"# TYPE surgeguard_inner_limit gauge\nsurgeguard_inner_limit {inner}\n"
            text += f"# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {0.6 * at}\n"
        return Scrape.from_text(text, at=at)

    inner = (12, 9, 30)
    seen = [window_between(scrape(t, v), scrape(t + 1, v), 0.0) for t, v in enumerate(inner, 1)]
    assert [w.limit for w in seen] == [40, 40, 40]
    assert [w.inner_limit for w in seen] == [12, 9, 30]
    assert [w.cpu_cores for w in seen] == [pytest.approx(0.6)] * 3
    peaks = server_peaks(seen)
    assert [peaks[f"inner_limit_{k}"] for k in ("min", "median", "max")] == [9, 12, 30]
    assert peaks["cpu_cores_median"] == pytest.approx(0.6)
    unexported = window_between(scrape(0, None), scrape(1, None), 0.0)
    assert unexported.inner_limit is None and unexported.cpu_cores is None
    assert server_peaks([unexported])["inner_limit_median"] is None
    assert server_peaks([unexported])["cpu_cores_median"] is None
