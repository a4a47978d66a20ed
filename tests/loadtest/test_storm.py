"""``surgeguard load --scenario storm``: polite Locust users and a wrk storm of impatient
connections in one run (issue 11); the storm's pure parts (scenario, wrk command, wrk's
status-counting script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from surgeguard_loadtest.load.command import bare_keys
from surgeguard_loadtest.scenarios import ALL_SCENARIOS, SCENARIOS, build
from surgeguard_loadtest.storm.phase import StormError, StormOptions, command
from surgeguard_loadtest.wrk import parse_wrk_output, wrk_command
from tests.support.processes import clean_env, free_port, surgeguard

WITH_STATUS = """\
Running 3s test @ http://127.0.0.1:41235/feed
  1 threads and 20 connections
  Latency Distribution
     50%    5.75ms
     99%   34.84ms
  900 requests in 3.00s, 1.84MB read
  Non-2xx or 3xx responses: 300
Requests/sec:    300.00
Transfer/sec:      0.61MB
STATUS 2xx 600 other 300
"""

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def test_the_storm_scenario_is_polite_users_throughout_and_a_storm_mid_run() -> None:
    storm = build("storm", 100, 60)
    assert storm.population == "polite"
    assert storm.storm_s == (12.0, 42.0)
    assert {step[0] for t in (0.0, 30.0, 59.0) if (step := storm.tick(t))} == {100}
    assert [storm.phase(t) for t in (5, 12, 41.9, 42)] == ["before", "storm", "storm", "after"]
    # Drills from the dashboard start Locust-only scenarios; the storm also needs wrk.
    assert "storm" in ALL_SCENARIOS and "storm" not in SCENARIOS
    assert build("spike").storm_s is None


def test_a_storm_wrk_command_uses_its_threads_one_key_and_waits_out_held_requests() -> None:
    cmd = command("http://127.0.0.1:9/", StormOptions(connections=2000, key="k1"), 30.0)
    assert cmd == [
        "wrk", "-t2", "-c2000", "-d30s", "--latency", "--timeout=30s",
        "-H", "X-Api-Key: k1", "http://127.0.0.1:9/feed",
    ]  # fmt: skip


def test_wrk_reads_whole_seconds_only_so_durations_are_rounded() -> None:
    cmd = wrk_command("http://h/", [], connections=4, duration_s=5.99987, timeout_s=0.2)
    assert "-d6s" in cmd and "--timeout=1s" in cmd
    with_script = wrk_command("http://h/", [], connections=4, duration_s=3, script=Path("s.lua"))
    assert with_script[-3:] == ["-s", "s.lua", "http://h/"]


def test_the_wrk_status_script_line_counts_one_clients_2xx() -> None:
    result = parse_wrk_output(WITH_STATUS)
    assert (result.requests, result.non_2xx_3xx, result.status_2xx) == (900, 300, 600)
    assert (
        parse_wrk_output(WITH_STATUS.replace("STATUS 2xx 600 other 300\n", "")).status_2xx is None
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (StormOptions(connections=1, threads=2), "--storm-connections must be >= --storm-threads"),
        (StormOptions(threads=0), "--storm-threads must be >= 1, got 0"),
        (StormOptions(path="feed"), "the storm's path must start with '/'"),
    ],
)
def test_a_storm_that_cannot_run_names_the_option(options: StormOptions, message: str) -> None:
    with pytest.raises(StormError, match=message):
        options.check()


def test_load_sends_bare_client_keys_without_their_ceilings() -> None:
    assert bare_keys("demo-key:critical, partner ,,mobile:normal") == [
        "demo-key",
        "partner",
        "mobile",
    ]


@contextmanager
def target(redis_url: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(SURGEGUARD_REDIS_URL=redis_url)
    with surgeguard("target", "--port", str(port), env=env, health_url=f"{url}/healthz"):
        yield url


def load_storm(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "surgeguard", "load", "--scenario", "storm",
            "--users", "5", "--duration", "10", "--storm-connections", "50",
            "--host", url, "--out", str(out), "--no-marks", *extra,
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip


@needs_wrk
@pytest.mark.slow
def test_a_storm_run_reports_the_polite_users_and_the_wrk_storm_side_by_side(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    out = tmp_path / "storm"
    with target(redis_server.url) as url:
        done = load_storm(url, out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "storm (wrk, 50 connections)" in done.stdout
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "storm" and summary["population"] == "polite"
    polite, storm = summary["populations"]["polite"], summary["populations"]["storm"]
    assert polite["generator"] == "locust" and polite["users"] == 5
    assert polite["requests"] > 10 and polite["ok"] > 0
    assert storm["generator"] == "wrk" and storm["connections"] == 50
    # 50 connections that never wait send far more than 5 users who think between requests.
    assert storm["requests"] > 5 * polite["requests"]
    assert storm["ok"] + storm["non_2xx_3xx"] == storm["requests"]
    assert storm["p99_ms"] is not None
    detail = summary["storm"]
    assert detail["error"] is None and detail["planned_s"] == [2.0, 7.0]
    assert detail["started_at_s"] == pytest.approx(2.0, abs=1.0)
    assert detail["key"] == "demo-key"  # one key for the storm; the users get the others
    # The server saw the storm: far more offered during it than before it.
    phases = summary["server_by_phase"]
    assert set(phases) == {"before", "storm", "after"}
    assert phases["storm"]["admitted_per_s"] + phases["storm"]["rejected_per_s"] > 5 * (
        phases["before"]["admitted_per_s"] + phases["before"]["rejected_per_s"]
    )
    # Everything else a load run reports is still there.
    assert summary["client_side"]["requests"] == polite["requests"]
    assert summary["healthz"]["probes"] >= 10
    assert (out / "report.html").stat().st_size > 0


def test_a_storm_with_more_threads_than_connections_fails_before_anything_starts(
    tmp_path: Path,
) -> None:
    done = load_storm("http://127.0.0.1:9", tmp_path / "x", "--storm-threads", "80")
    assert done.returncode == 2
    assert "--storm-connections must be >= --storm-threads (80), got 50" in done.stderr
