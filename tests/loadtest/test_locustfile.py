"""The locustfile for real: Locust (its own process, headless) drives a short spike
at a real target with a small limit; shed answers are counted as shed, not failures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from surgeguard.embedded_redis import EmbeddedRedis
from tests.support.processes import clean_env, free_port, surgeguard

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


@pytest.mark.slow
def test_a_short_spike_is_shed_not_failed(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    port = free_port()
    target = f"http://127.0.0.1:{port}"
    env = clean_env(
        SURGEGUARD_REDIS_URL=redis_server.url,
        SURGEGUARD_CONCURRENCY_LIMIT="2",
        SURGEGUARD_QUEUE_LIMIT="0",
        SURGEGUARD_DB_LATENCY_MS="30",
    )
    shape = {
        "LOADTEST_BASELINE_USERS": "2",
        "LOADTEST_SPIKE_USERS": "60",
        "LOADTEST_BASELINE_S": "2",
        "LOADTEST_RAMP_S": "2",
        "LOADTEST_HOLD_S": "4",
    }
    with surgeguard("target", "--port", str(port), env=env, health_url=f"{target}/healthz"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--host",
                target,
                "--csv",
                str(tmp_path / "run"),
                "--only-summary",
                "--exit-code-on-error",
                "1",
            ],
            env={**clean_env(), **shape},
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 50
    assert int(total["Failure Count"]) == 0  # 429s are shed, not failures
    shed = [name for name in rows if name.endswith("[shed]")]
    assert shed, sorted(rows)
    assert any(not name.endswith("[shed]") and name != "Aggregated" for name in rows)
