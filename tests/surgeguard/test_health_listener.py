"""``/healthz`` and ``/metrics`` on a port of their own (issue 11: health and metrics
stay answerable during a storm)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from surgeguard.health_listener import HealthListener
from tests.support.clock import FakeClock


def test_healthy_while_the_loop_beats_and_503_once_it_has_been_silent_too_long() -> None:
    clock = FakeClock()
    beat = clock.now
    listener = HealthListener(CollectorRegistry(), lambda: beat, stall_s=10.0, clock=clock)
    try:
        clock.advance(9.5)
        assert listener.answer("/healthz")[0] == 200
        clock.advance(1.0)
        status, _, body = listener.answer("/healthz")
        assert status == 503 and b'"stalled"' in body and b"10.5" in body
    finally:
        listener.stop()


def test_it_answers_over_real_http_from_its_own_thread() -> None:
    registry = CollectorRegistry()
    Counter("probe_demo", "A counter to find in the scrape.", registry=registry).inc(3)
    clock = FakeClock()
    listener = HealthListener(registry, lambda: clock.now, clock=clock).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.port}", timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert "probe_demo_total 3.0" in metrics.text
            assert client.get("/other").status_code == 404
    finally:
        listener.stop()
