"""``surgeguard load`` for real: Locust in its own process against a real target (and
a real controller where the scenario acts through it), reports on disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_loadtest.verdict import judge_summary
from tests.support.processes import clean_env, free_port, surgeguard

TOKEN = "load-test-token-of-24-chars"
LOAD_TIMEOUT_S = 120


def load(*args: str, env: dict[str, str], timeout: float = LOAD_TIMEOUT_S) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "surgeguard", "load", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(
    scenario: str,
    users: int,
    duration_s: int,
    url: str,
    out: Path,
    *extra: str,
    env: dict[str, str],
) -> Any:
    """``surgeguard load`` of one sized scenario against ``url``, reports into ``out``."""
    return load(
        "--scenario", scenario, "--users", str(users), "--duration", str(duration_s),
        "--host", url, "--out", str(out), *extra, env=env,
    )  # fmt: skip


@contextmanager
def target(redis_url: str, **settings: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        SURGEGUARD_REDIS_URL=redis_url,
        SURGEGUARD_CONTROL_POLL_MS="200",
        **{f"SURGEGUARD_{k.upper()}": v for k, v in settings.items()},
    )
    with surgeguard("target", "--port", str(port), env=env, health_url=f"{url}/healthz"):
        yield url


@contextmanager
def controller(redis_url: str, target_url: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        SURGEGUARD_REDIS_URL=redis_url,
        SURGEGUARD_ADMIN_TOKEN=TOKEN,
        SURGEGUARD_CONTROLLER_TICK_MS="500",
    )
    args = ("controller", "--target", target_url, "--port", str(port))
    with surgeguard(*args, env=env, health_url=f"{url}/healthz"):
        yield url


def summary_of(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return result


@pytest.mark.slow
def test_a_short_spike_writes_its_reports_and_counts_shed_as_shed(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "spike"
    # A replica that can hold two requests at once and queue none: the spike is shed.
    with target(
        redis_server.url, concurrency_limit="2", queue_limit="0", db_latency_ms="30"
    ) as url:
        done = run("spike", 60, 8, url, out, "--no-marks", env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(progress) >= 2, done.stdout
    assert "server: admitted" in done.stdout
    # Locust's columns next to the server's window of the same second (issue 16)
    assert any(
        re.search(r"s ago \| sent \d+/s shed \d+/s fail \d+/s \| server:", p) for p in progress
    )
    for name in (
        "summary.json",
        "report.html",
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "locust" in (out / "report.html").read_text().lower()

    summary = summary_of(out)
    client, server, health = summary["client_side"], summary["server_side"], summary["healthz"]
    assert summary["scenario"] == "spike" and summary["stopped_early"] is False
    assert client["requests"] > 50
    assert client["shed"] > 0  # 429s were recorded as shed...
    assert client["failures"] == 0  # ...not as failures
    assert any(name.endswith("[shed]") for name in client["by_name"])
    assert server["admitted"] > 0
    assert sum(server["rejected"].values()) > 0
    assert server["errors_5xx"] == 0
    assert server["rss_mb_max"] is not None and server["rss_mb_max"] > 10
    assert health["probes"] >= 10 and health["failed"] == 0
    assert len(summary["windows"]) >= 6
    assert summary["generator"]["users_peak"] == 60
    # Where the machine's CPU went, per phase: Locust and the replica are both seen.
    cpu = summary["machine_cpu"]
    assert cpu["cores"] == os.cpu_count() and len(cpu["timeline"]) >= 6
    during = cpu["phases"]["spike"]
    assert during["locust"] > 0 and during["target"] > 0, during
    assert during["all"] >= during["locust"] + during["target"] - 0.02

    # The verdict (issue 16): one line per phase, in the output and in summary.json.
    assert summary["slo"]["p99_ms"] == 250 and summary["slo"]["baseline_phase"] == "baseline"
    phases = {p["name"]: p for p in summary["phases"]}
    assert list(phases) == ["baseline", "spike", "recovery"]
    spike = phases["spike"]
    assert spike["windows"] >= 2 and spike["healthz_probes"] >= 4
    assert 0 <= spike["within_slo_share"] <= 1 and spike["deliberate_503_share"] == 0
    assert spike["goodput_per_s"] > 0
    # Against the baseline's goodput; a baseline of a user or two may see none in a run
    # this short on a busy machine, and then there is no ratio (not a zero).
    baseline_good = phases["baseline"]["goodput_per_s"]
    assert (spike["goodput_ratio"] is not None) == (baseline_good > 0), phases["baseline"]
    lines = done.stdout.splitlines()
    head = lines.index("verdict against the SLO (admitted p99 <= 250 ms):")
    printed = [line.strip() for line in lines[head + 1 : head + 4]]
    assert printed == [v["line"] for v in summary["verdicts"]]
    for line, phase in zip(printed, phases, strict=True):
        # A phase that admitted nothing says so (a one-window baseline of a busy run can).
        counted = r"(\d+ of \d+ windows within|none of \d+ windows admitted a request)"
        assert re.match(rf"{phase}: (SURVIVED|DEGRADED|FAILED): {counted}", line), line
    # The spike admitted requests (goodput above), so its line counts windows.
    assert re.match(r"spike: (SURVIVED|DEGRADED|FAILED): \d+ of \d+ windows within", printed[1])
    assert [v.line for v in judge_summary(summary)] == printed  # the same from the file
    # The run's own report, next to Locust's.
    page = (out / "surgeguard_report.html").read_text()
    assert "SLO p99 250 ms" in page and printed[1] in page.replace("&#x27;", "'")
    assert (out / "plotly.min.js").exists() and "surgeguard_report.html" in summary["files"]


@pytest.mark.slow
def test_sigterm_ends_a_run_early_and_the_reports_are_still_written(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "soak"
    with target(redis_server.url) as url:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "surgeguard",
                "load",
                "--scenario",
                "soak",
                "--users",
                "10",
                "--duration",
                "120",
                "--host",
                url,
                "--out",
                str(out),
                "--no-marks",
            ],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]  # load:, then progress
            assert any("users" in line for line in lines), lines
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=40) == 0
            assert time.monotonic() - started < 30
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    summary = summary_of(out)
    assert summary["stopped_early"] is True
    # judged on what it reached: the soak's one phase, cut short where it stopped
    (phase,) = summary["phases"]
    assert phase["name"] == "steady" and 0 < phase["end_s"] < 60
    assert summary["verdicts"][0]["phase"] == "steady"
    assert summary["client_side"]["requests"] > 0
    assert (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "flood"], "unknown scenario 'flood': choose from spike, step"),
        (["--scenario", "spike", "--users", "20000"], "users must be in [1, 10000], got 20000"),
        (["--scenario", "spike", "--duration", "1"], "duration must be in [5, 3600] s, got 1"),
        (["--scenario", "spike", "--host", "localhost:8000"], "--host must be an http(s) URL"),
        (["--scenario", "soak", "--tune"], "--tune runs the step scenario, not soak"),
        ([], "give --scenario NAME"),
    ],
)
def test_bad_input_is_one_line_and_nothing_runs(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    done = load(*args, "--out", str(out), env=clean_env(), timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("surgeguard load: ")
    assert message in done.stderr
    assert not out.exists()


def test_a_scenario_with_chaos_needs_the_controller_token(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    unused = f"http://127.0.0.1:{free_port()}"
    done = load(
        "--scenario",
        "slow_dependency",
        "--host",
        unused,
        "--controller",
        unused,
        "--out",
        str(tmp_path / "x"),
        env=clean_env(),
        timeout=30,
    )
    assert done.returncode == 2
    assert "give --controller URL and set SURGEGUARD_ADMIN_TOKEN" in done.stderr


@pytest.mark.slow
def test_slow_dependency_slows_the_db_half_way_and_puts_it_back(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "slow"
    with target(redis_server.url) as url, controller(redis_server.url, url) as ctl:
        done = run(
            "slow_dependency",
            20,
            6,  # the chaos half-way, at 3 s: slowed, then put back at the end
            url,
            out,
            "--controller",
            ctl,
            env=clean_env(SURGEGUARD_ADMIN_TOKEN=TOKEN),
        )
        assert done.returncode == 0, done.stderr[-2000:]
        audit = httpx.get(f"{ctl}/api/v1/audit").json()
        drills = httpx.get(f"{ctl}/api/v1/drills").json()
    summary = summary_of(out)
    (event,) = summary["chaos"]
    assert event == {"at_s": 3.0, "dependency": "db", "latency_multiplier": 5.0, "applied": True}
    chaos = [
        (a["what"], a["new"]["latency_multiplier"])
        for a in reversed(audit)
        if a["what"] == "chaos db"
    ]
    assert chaos == [("chaos db", 5.0), ("chaos db", 1.0)]  # slowed, then put back
    # The run was announced to the controller: its start and end mark the charts.
    (mark,) = [d for d in drills["recent"] if d["id"] == summary["id"]]
    assert mark["source"] == "external" and mark["status"] == "finished"
    assert mark["ended_at"] > mark["started_at"]


@pytest.mark.slow
def test_tune_reports_the_converged_knobs_and_the_knee(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "tune"
    # db-bound: 2 slots x 20 ms, about 100 reads/s; 400 users are far past it.
    with (
        target(
            redis_server.url,
            db_capacity="2",
            db_latency_ms="20",
            bulkhead_max_wait_ms="5000",
            dependency_timeout_ms="5000",
        ) as url,
        controller(redis_server.url, url) as ctl,
    ):
        done = load(
            "--tune",
            "--users",
            "400",
            "--duration",
            "24",
            "--host",
            url,
            "--controller",
            ctl,
            "--out",
            str(out),
            env=clean_env(SURGEGUARD_ADMIN_TOKEN=TOKEN),
        )
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = json.loads((out / "tune.json").read_text())
    assert len(tuned["stairs"]) == 8
    assert [s["users"] for s in tuned["stairs"]] == [50, 100, 150, 200, 250, 300, 350, 400]
    assert "concurrency_limit" in tuned["converged"]
    assert any(
        line.startswith("SURGEGUARD_CONCURRENCY_LIMIT=") for line in tuned["static_settings"]
    )
    assert tuned["knee"] is not None  # 400 users offer far more than 100 reads/s
    assert "capacity: about" in done.stdout and "for a static deployment" in done.stdout
    assert (out / "tune.md").read_text().startswith("# Tuning run")


@pytest.mark.slow
def test_two_locust_processes_share_the_users(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    with target(redis_server.url) as url:
        done = run("soak", 40, 6, url, out, "--processes", "2", "--no-marks", env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    summary = summary_of(out)
    assert summary["generator"]["processes"] == 2
    assert summary["generator"]["users_peak"] == 40  # counted across both processes
    assert summary["client_side"]["requests"] > 20
    assert summary["server_side"]["admitted"] >= summary["client_side"]["requests"] - 40


@pytest.mark.slow
def test_a_retry_storm_asks_more_often_than_a_polite_spike(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    """The same users against a replica that sheds almost everything: impatient users
    ask again at once, polite ones wait out Retry-After, so the storm sends far more.
    The replica has no penalty box: with one (issue 11), impatient users are held until
    their Retry-After, which is the point of it, and send no more than polite ones."""
    sent = {}
    with target(
        redis_server.url,
        concurrency_limit="1",
        queue_limit="0",
        db_latency_ms="50",
        penalty_box="false",
    ) as url:
        for scenario in ("spike", "retry_storm"):
            out = tmp_path / scenario
            done = run(scenario, 40, 6, url, out, "--no-marks", env=clean_env())
            assert done.returncode == 0, done.stderr[-2000:]
            summary = summary_of(out)
            assert summary["population"] == ("impatient" if scenario == "retry_storm" else "mixed")
            sent[scenario] = summary["client_side"]["requests"]
            assert summary["client_side"]["shed"] > 0
    assert sent["retry_storm"] > 1.5 * sent["spike"], sent
