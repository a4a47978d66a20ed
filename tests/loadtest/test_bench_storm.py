"""``surgeguard bench --scenario storm`` for real (``--quick`` with tiny sizes: real
target, controller, Redis and wrk), and its pure parts. The issue's speed targets
belong in the benchmark's numbers, never here: these tests check that the run is
well-formed and that every target is judged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from surgeguard.settings import SettingsError
from surgeguard_loadtest.storm.bench import FULL, QUICK, plan_from
from surgeguard_loadtest.storm.report import comparison, targets
from tests.support.processes import clean_env

PHASES = {"idle", "polite", "alone", "attacker", "storm_50", "storm_100"}
TARGETS = {
    "storm_50_goodput",
    "storm_100_goodput",
    "healthz_p99",
    "metrics_scrape",
    "limit_above_minimum",
    "legit_goodput",
}


@pytest.fixture(scope="module")
def storm_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    out = tmp_path_factory.mktemp("storm-bench")
    done = subprocess.run(
        [
            sys.executable, "-m", "surgeguard", "bench", "--scenario", "storm", "--quick",
            "--storms", "50,100", "--seconds", "3", "--settle-s", "2", "--out", str(out),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_storm_bench_writes_a_well_formed_summary(storm_bench: tuple[Path, str]) -> None:
    out, _ = storm_bench
    s: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert s["scenario"] == "storm" and s["slo_p99_ms"] == 250
    assert s["plan"]["storms"] == [50, 100] and s["plan"]["storm_s"] == 3
    assert s["plan"]["settle_s"] == 2
    assert set(s["configurations"]) == {"guarded", "unguarded"}
    unguarded = s["configurations"]["unguarded"]["env"]
    assert unguarded["target"] == {"SURGEGUARD_PENALTY_BOX": "false"}
    assert unguarded["controller"] == {"SURGEGUARD_CONTROLLER_HOLD_RULE": "false"}
    for name, config in s["configurations"].items():
        assert set(config["phases"]) == PHASES, name
        assert set(config["targets"]) == TARGETS, name
        assert config["idle_rss_mb"] > 10
        for phase_name, phase in config["phases"].items():
            where = (name, phase_name)
            assert phase["healthz"]["probes"] >= 6, where  # every quarter second
            assert phase["healthz_service_port"]["probes"] >= 6, where
            assert phase["metrics_scrape"]["probes"] >= 2, where  # every second
            assert phase["metrics_scrape"]["max_s"] is not None, where
            assert phase["limit_min"] >= 1, where
            assert phase["server"]["windows"], where
        phases = config["phases"]
        assert phases["polite"]["server"]["goodput_per_s"] > 0, name
        assert phases["polite"]["clients"]["polite"]["requests"] > 0, name
        legit = phases["attacker"]["clients"]["legit"]
        attacker = phases["attacker"]["clients"]["attacker"]
        assert legit["requests"] > 0 and 0 <= legit["ok"] <= legit["requests"], name
        assert attacker["requests"] > 0 and attacker["ok"] == 0, name  # no key: never served
        assert phases["attacker"]["server"]["rejected"].get("unauthorized", 0) > 0, name
        for storm in ("storm_50", "storm_100"):
            assert phases[storm]["connections"] == int(storm.split("_")[1])
            assert phases[storm]["clients"]["storm"]["requests"] > 0, (name, storm)
        head = config["headline"]
        assert head["polite_goodput_per_s"] == phases["polite"]["server"]["goodput_per_s"]
        assert set(head["storms"]) == {"storm_50", "storm_100"}
        assert head["memory_cost_mb"] == phases["storm_100"]["rss_delta_mb"]
        for target in config["targets"].values():
            assert isinstance(target["met"], bool) and target["goal"]
    assert set(s["guarded_over_unguarded"]) >= {"storm_50_goodput", "legit_ratio"}
    assert (out / "logs" / "target-guarded.log").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_storm_report_names_every_target_met_or_not(storm_bench: tuple[Path, str]) -> None:
    out, stdout = storm_bench
    report = (out / "report.md").read_text()
    s: dict[str, Any] = json.loads((out / "summary.json").read_text())
    for target in s["configurations"]["guarded"]["targets"].values():
        (row,) = [line for line in report.splitlines() if line.startswith(f"| {target['goal']} |")]
        cells = row.strip("|").split("|")[1:]
        assert len(cells) == 2, row  # guarded, unguarded
        assert all(c.strip().startswith(("met (", "NOT met (")) for c in cells), row
    for heading in ("## Targets", "## Guarded / unguarded", "## guarded", "## unguarded"):
        assert heading in report
    assert "| storm_100 |" in report
    assert "guarded: polite" in stdout and "storm_100: goodput" in stdout
    # A verdict per phase against the SLO, the polite phase the baseline (issue 16).
    verdicts = s["configurations"]["guarded"]["verdicts"]
    assert [v["phase"] for v in verdicts] == [
        "polite",
        "alone",
        "attacker",
        "storm_50",
        "storm_100",
    ]
    assert all(f"  {v['line']}" in stdout and v["line"] in report for v in verdicts)
    assert "## Verdicts per phase" in report


def test_storm_plan_flags_are_checked_before_anything_starts() -> None:
    assert plan_from(False, None, None) == FULL
    assert FULL.storms == (2_000, 10_000) and FULL.storm_s == 30 and FULL.polite_s == 15
    assert plan_from(True, "50,100", 3).storms == (50, 100)
    assert plan_from(True, None, 3).storm_s == 3 == plan_from(True, None, 3).attacker_s
    assert plan_from(True, None, None) == QUICK
    for bad in ("100", "100,50", "a,b", "1,10"):
        with pytest.raises(SettingsError, match="--storms must be two connection counts"):
            plan_from(False, bad, None)
    with pytest.raises(SettingsError, match=r"--seconds must be in \[1, 600\], got 0.5"):
        plan_from(False, None, 0.5)
    assert plan_from(True, None, 3, 2).settle_s == 2 and plan_from(True, None, 3).settle_s == 3
    with pytest.raises(SettingsError, match=r"--settle-s must be in \[2, 600\], got 1.5"):
        plan_from(True, None, 3, 1.5)


def _phase(p99: float | None, scrape_s: float, limit: float, failed: int = 0) -> dict[str, Any]:
    return {
        "healthz": {"p99_ms": p99},
        "metrics_scrape": {"max_s": scrape_s, "failed": failed},
        "limit_min": limit,
    }


def _headline(small: float | None, large: float, legit: float | None) -> dict[str, Any]:
    return {
        "storms": {
            "storm_2000": {"connections": 2000, "ratio_to_polite": small},
            "storm_10000": {"connections": 10000, "ratio_to_polite": large},
        },
        "legit_ratio": legit,
    }


def test_storm_targets_are_met_only_past_their_goals_and_missing_data_is_not_met() -> None:
    phases = {"storm_2000": _phase(150, 0.4, 20), "storm_10000": _phase(199, 0.9, 2)}
    met = targets(_headline(0.8, 0.7, 0.9), phases, limit_minimum=1)
    assert {k: t["met"] for k, t in met.items()} == dict.fromkeys(met, True)
    assert met["storm_2000_goodput"]["goal"] == (
        "storm goodput >= 0.8 of polite at 2,000 connections"
    )
    assert met["healthz_p99"]["value"] == 199 and met["limit_above_minimum"]["value"] == 2
    phases = {"storm_2000": _phase(None, 0.4, 1), "storm_10000": _phase(250, 1.0, 5, failed=1)}
    missed = targets(_headline(None, 0.69, 0.2), phases, limit_minimum=1)
    assert {k: t["met"] for k, t in missed.items()} == dict.fromkeys(missed, False)


def test_storm_comparison_is_guarded_over_unguarded_and_none_where_unguarded_is_zero() -> None:
    def head(good: float, p99: float, legit: float) -> dict[str, Any]:
        return {
            "storms": {"storm_2000": {"goodput_per_s": good, "healthz_p99_ms": p99}},
            "legit_ratio": legit,
        }

    ratios = comparison(head(300, 20, 0.95), head(0, 400, 0.19))
    assert ratios == {"storm_2000_goodput": None, "storm_2000_healthz_p99": 0.05, "legit_ratio": 5}
