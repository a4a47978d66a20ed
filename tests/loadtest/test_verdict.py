"""The verdict after a load run (issue 16): each phase SURVIVED / DEGRADED / FAILED
against the SLO, and why. Pure: numbers in, verdicts out, and the same verdicts again
from a recorded ``summary.json``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from surgeguard_loadtest.load.options import LoadOptions
from surgeguard_loadtest.load.run import judged
from surgeguard_loadtest.load.watch import Probe, Window
from surgeguard_loadtest.scenarios import PhaseSpan, build
from surgeguard_loadtest.verdict import (
    DEGRADED,
    FAILED,
    SURVIVED,
    PhaseNumbers,
    Thresholds,
    judge,
    judge_all,
    judge_summary,
    lines,
    measure,
)

DATA = Path(__file__).with_name("data")
RECORDED = DATA / "load-summary-spike.json"  # a real `surgeguard load --scenario spike`

BASELINE = PhaseNumbers(
    name="baseline", start_s=0, end_s=20, windows=20, judged=20, within_slo=20,
    goodput_per_s=100.0, admitted=2000, deliberate_503=0, healthz_probes=40,
    healthz_failed=0, healthz_failed_in_a_row=0, healthz_p99_ms=10.0,
)  # fmt: skip
GOOD = replace(BASELINE, name="spike", start_s=30, end_s=50)


def verdict_of(**changes: Any) -> tuple[str, tuple[str, ...]]:
    v = judge(replace(GOOD, **changes), BASELINE)
    return v.level, v.reasons


def test_the_issues_example_line() -> None:
    spike = replace(GOOD, within_slo=14, deliberate_503=640)  # 32% of 2000
    assert judge(spike, BASELINE).line == (
        "spike: DEGRADED: 14 of 20 windows within the SLO (70%, needs 90%); "
        "32% of admitted were deliberate 503s (needs at most 5%)"
    )


def test_a_phase_that_survived_says_all_its_numbers() -> None:
    v = judge(replace(GOOD, goodput_per_s=120.0), BASELINE)
    assert v.level == SURVIVED
    assert v.reasons == (
        "20 of 20 windows within the SLO (100%)",
        "goodput 120/s (120% of the baseline's 100/s)",
        "0% of admitted were deliberate 503s",
        "healthz p99 10 ms, none failed",
    )


@pytest.mark.parametrize(
    ("within", "level"), [(18, SURVIVED), (17, DEGRADED), (10, DEGRADED), (9, FAILED)]
)
def test_windows_within_the_slo_at_the_edges(within: int, level: str) -> None:
    # of 20 windows: 90% survives, 50% is still only degraded
    assert verdict_of(within_slo=within)[0] == level


@pytest.mark.parametrize(
    ("goodput", "level"), [(90.0, SURVIVED), (89.9, DEGRADED), (50.0, DEGRADED), (49.9, FAILED)]
)
def test_goodput_against_the_baseline_at_the_edges(goodput: float, level: str) -> None:
    assert verdict_of(goodput_per_s=goodput)[0] == level


def test_a_shortfall_says_what_the_next_level_needs() -> None:
    assert verdict_of(goodput_per_s=40.0)[1] == (
        "goodput 40/s, 40% of the baseline's 100/s (needs 50% for DEGRADED)",
    )
    assert verdict_of(goodput_per_s=80.0)[1] == (
        "goodput 80/s, 80% of the baseline's 100/s (needs 90%)",
    )
    assert verdict_of(healthz_p99_ms=700.0)[1] == ("healthz p99 700 ms (needs at most 500 ms)",)


@pytest.mark.parametrize(
    ("deliberate", "level"),
    [(100, SURVIVED), (101, DEGRADED), (1000, DEGRADED), (1001, FAILED)],
)
def test_deliberate_503s_at_the_edges(deliberate: int, level: str) -> None:
    # of 2000 admitted: at most 5% survives, at most 50% is degraded
    assert verdict_of(deliberate_503=deliberate)[0] == level


@pytest.mark.parametrize(
    ("p99", "failed", "in_a_row", "level"),
    [
        (500.0, 0, 0, SURVIVED),
        (500.1, 0, 0, DEGRADED),
        (1000.0, 0, 0, DEGRADED),
        (1000.1, 0, 0, FAILED),
        (10.0, 2, 2, DEGRADED),  # a probe failed: never SURVIVED
        (10.0, 5, 2, DEGRADED),  # ... however many, while fewer than 3 in a row
        (10.0, 3, 3, FAILED),  # a liveness probe would have restarted the replica
    ],
)
def test_healthz_at_the_edges(p99: float, failed: int, in_a_row: int, level: str) -> None:
    changes = {"healthz_p99_ms": p99, "healthz_failed": failed, "healthz_failed_in_a_row": in_a_row}
    assert verdict_of(**changes)[0] == level


def test_the_worst_criterion_decides_and_leads_the_reasons() -> None:
    level, reasons = verdict_of(within_slo=17, goodput_per_s=20.0)
    assert level == FAILED
    assert reasons[0].startswith("goodput 20/s, 20% of the baseline's")
    assert reasons[1] == "17 of 20 windows within the SLO (85%, needs 90%)"
    assert len(reasons) == 2  # what survived is not a reason for the verdict


def test_no_goodput_criterion_without_a_baseline_or_for_the_baseline_itself() -> None:
    assert judge(BASELINE, BASELINE).reasons[1].startswith("0% of admitted")
    soak = judge(replace(GOOD, goodput_per_s=1.0), None)
    assert soak.level == SURVIVED and not any("goodput" in r for r in soak.reasons)
    idle = replace(BASELINE, goodput_per_s=0.0)
    assert judge(replace(GOOD, goodput_per_s=0.0), idle).level == SURVIVED


def test_a_phase_without_windows_or_admitted_requests_failed() -> None:
    none = replace(GOOD, windows=0, judged=0, within_slo=0, admitted=0, deliberate_503=0)
    assert judge(none, BASELINE).reasons[0] == (
        "no 1 s windows from the server (its /metrics was not read)"
    )
    shut = replace(none, windows=5)
    assert judge(shut, BASELINE).level == FAILED
    assert judge(shut, BASELINE).reasons[0] == "none of 5 windows admitted a request"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"windows_survived": 1.2}, "windows_survived must be in [0, 1], got 1.2"),
        ({"goodput_degraded": 0.95}, "goodput_degraded must be no stricter than goodput_survived"),
        ({"deliberate_503_degraded": 0.01}, "deliberate_503_degraded must be no stricter"),
        ({"healthz_p99_survived_ms": 2000.0}, "healthz_p99_survived_ms must be in (0, "),
        ({"healthz_failed_in_a_row": 0}, "healthz_failed_in_a_row must be >= 1, got 0"),
    ],
)
def test_thresholds_say_the_allowed_range(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Thresholds(**changes)


def test_stricter_thresholds_change_the_verdict() -> None:
    strict = Thresholds(windows_survived=1.0)
    assert judge(replace(GOOD, within_slo=19), BASELINE, strict).level == DEGRADED


def window(at: float, p99: float | None, good: float = 10.0, unavailable: float = 0.0) -> Window:
    return Window(
        at=at, offered_per_s=20, admitted_per_s=10, good_per_s=good, rejected_per_s=10,
        errors_per_s=0, unavailable_per_s=unavailable, p50_ms=5, p99_ms=p99, limit=8,
        queue_limit=4, peak_in_flight=8, rss_mb=50,
    )  # fmt: skip


def test_measure_puts_a_window_in_the_phase_of_its_middle_and_a_probe_where_it_was_sent() -> None:
    span = PhaseSpan("spike", 2.0, 5.0)
    windows = [
        window(2.4, 100.0),  # middle 1.9: before
        window(2.6, 100.0),  # middle 2.1: in
        window(3.6, 400.0, good=2.0, unavailable=5.0),
        window(4.6, None, good=0.0),  # nothing admitted: not judged
        window(5.6, 100.0),  # middle 5.1: after
    ]
    probes = [Probe(1.9, 1.0, True), Probe(2.0, 1500.0, True), Probe(2.5, 3.0, False)]
    probes += [Probe(3.0, 4.0, True), Probe(5.0, 2.0, False)]
    n = measure(span, windows, probes, slo_ms=250.0)
    assert (n.windows, n.judged, n.within_slo) == (3, 2, 1)
    assert n.goodput_per_s == 4.0  # (10 + 2 + 0) / 3
    assert (n.admitted, n.deliberate_503) == (30.0, 5.0)
    # a probe over the liveness timeout failed as well as one that was not answered 200
    assert (n.healthz_probes, n.healthz_failed, n.healthz_failed_in_a_row) == (3, 2, 2)
    assert n.healthz_p99_ms == 1500.0


def test_judge_all_compares_every_phase_with_the_named_baseline() -> None:
    slow = replace(GOOD, name="db slow", goodput_per_s=40.0)
    verdicts = judge_all([BASELINE, slow], "baseline")
    assert [(v.phase, v.level) for v in verdicts] == [("baseline", SURVIVED), ("db slow", FAILED)]


# -- from a recorded summary.json ------------------------------------------------------


def recorded() -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(RECORDED.read_text())
    return summary


def test_the_recorded_verdicts_come_again_from_the_recorded_phases() -> None:
    summary = recorded()
    assert [v.line for v in judge_summary(summary)] == [v["line"] for v in summary["verdicts"]]
    assert [v["phase"] for v in summary["verdicts"]] == ["baseline", "spike", "recovery"]
    assert lines(summary).splitlines()[0] == (
        f"verdict against the SLO (admitted p99 <= {summary['slo']['p99_ms']:g} ms):"
    )


def test_the_recorded_phases_come_again_from_the_recorded_windows_and_probes() -> None:
    summary = recorded()
    scenario = build("spike", summary["users"], summary["duration_s"])
    windows = [Window(**w) for w in summary["windows"]]
    probes = [Probe(*p) for p in summary["healthz"]["timeline"]]
    slo_ms = summary["slo"]["p99_ms"]
    thresholds = Thresholds(**summary["slo"]["thresholds"])
    again = [measure(s, windows, probes, slo_ms, thresholds) for s in scenario.phase_spans()]
    assert [PhaseNumbers.from_json(p) for p in summary["phases"]] == again


def test_a_recorded_summary_judged_with_other_thresholds() -> None:
    summary = recorded()
    summary["slo"]["thresholds"]["windows_survived"] = 0.0
    summary["slo"]["thresholds"]["windows_degraded"] = 0.0
    for v in judge_summary(summary):
        assert not any("windows within the SLO (" in r and "needs" in r for r in v.reasons)


def test_a_run_stopped_early_is_judged_on_the_phases_it_reached() -> None:
    summary = recorded()
    opts = LoadOptions(
        scenario=build("spike", summary["users"], summary["duration_s"]),
        host=summary["host"],
        out=Path("unused"),
    )
    windows, timeline = summary["windows"], summary["healthz"]["timeline"]
    whole = judged(opts, windows, timeline)
    assert whole["phases"] == summary["phases"] and whole["verdicts"] == summary["verdicts"]
    spike_start = whole["phases"][1]["start_s"]
    early = judged(opts, windows, timeline, reached_s=spike_start + 2.0)
    assert [p["name"] for p in early["phases"]] == ["baseline", "spike"]
    assert early["phases"][1]["end_s"] == round(spike_start + 2.0, 2)
    assert early["phases"][1]["windows"] == 2
    alone = judged(opts, windows, timeline, reached_s=1.0)
    assert [p["name"] for p in alone["phases"]] == ["baseline"]
