"""A Prometheus finds the replicas the way the controller does (issue 15): its
``http_sd_configs`` reads the controller's ``GET /api/v1/targets``. All real: a replica
that announces itself in Redis becomes a Prometheus target, and its series reach a
controller reading signals through Prometheus (no static target anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from surgeguard.runtime.embedded_redis import EmbeddedRedis
from tests.support.polling import until_truthy
from tests.support.processes import clean_env, free_port, surgeguard
from tests.support.prometheus import needs_prometheus, prometheus

pytestmark = [needs_prometheus, pytest.mark.slow]


def http_sd_config(controller: str) -> str:
    """A prometheus.yml whose one job's targets are the controller's replicas."""
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: surgeguard-replicas\n    http_sd_configs:\n"
        f"      - url: {controller}/api/v1/targets\n        refresh_interval: 1s\n"
    )


def _active(prom: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom}/api/v1/targets", params={"state": "active"}, timeout=5).json()
    targets: list[dict[str, Any]] = body["data"]["activeTargets"]
    return targets


def test_an_announced_replica_is_scraped_by_prometheus_and_tuned_through_it(
    redis_server: EmbeddedRedis, redis_client: object, tmp_path: Path
) -> None:
    prom_port, controller_port, replica_port = free_port(), free_port(), free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    replica = f"127.0.0.1:{replica_port}"
    with prometheus(http_sd_config(controller), tmp_path / "prometheus", port=prom_port) as prom:
        env = clean_env(
            SURGEGUARD_REDIS_URL=redis_server.url,
            SURGEGUARD_PROMETHEUS_URL=prom,
            SURGEGUARD_ANNOUNCE_INTERVAL_MS="250",
        )
        with (
            surgeguard(
                "controller",
                "--port",
                str(controller_port),
                "--tick-ms",
                "500",
                env=env,
                health_url=f"{controller}/healthz",
            ),
            surgeguard(
                "target",
                "--port",
                str(replica_port),
                "--replica-id",
                "prom-a",
                env=env,
                health_url=f"http://{replica}/healthz",
            ),
        ):
            found = until_truthy(
                lambda: [
                    t
                    for t in _active(prom)
                    if t["labels"].get("instance") == replica and t["health"] == "up"
                ],
                40.0,
                "the announced replica scraped by Prometheus",
            )
            assert found[0]["labels"]["job"] == "surgeguard-replicas"

            def tuned() -> bool:
                state = httpx.get(f"{controller}/api/v1/state", timeout=5).json()
                view = state["replicas"].get("prom-a")
                return bool(view and view["reasons"] and not view["signals"]["stale"])

            until_truthy(tuned, 30.0, "prom-a tuned from Prometheus's series")
