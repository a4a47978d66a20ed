"""A replica says which objective its latency buckets are cut at; a controller steering
to another one says so once, on a real replica and a real controller."""

from __future__ import annotations

import logging

import pytest

from tests.controller.conftest import StartController
from tests.target_app.conftest import StartTarget


def test_a_replica_with_another_slo_is_named_once(
    start_target: StartTarget, start_controller: StartController, caplog: pytest.LogCaptureFixture
) -> None:
    same = start_target(replica_id="same", slo_p99_ms=250)
    other = start_target(replica_id="other", slo_p99_ms=100)
    ctl = start_controller([same.url, other.url], slo_s=0.25)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            ctl.tick()
    said = [r.getMessage() for r in caplog.records if "declares an SLO" in r.getMessage()]
    assert said == [
        "replica other declares an SLO of 100 ms, the controller steers to 250 ms: "
        "give both the same SURGEGUARD_SLO_P99_MS"
    ]
