"""The Prometheus signal path against a real Prometheus scraping a live target: the
same series, the same values, hence the same signals as a direct scrape."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import compute
from surgeguard_controller.sensing.sources import DirectSource, PrometheusSource
from tests.support.processes import free_port
from tests.support.prometheus import needs_prometheus, prometheus, scrape_config
from tests.target_app.conftest import API_KEY, StartTarget

pytestmark = needs_prometheus
CUMULATIVE = ("_total", "_bucket", "_count", "_sum")
# Counts that move with no traffic at all (a wake-up every 50 ms): they never settle.
TICKING = ("surgeguard_event_loop_lag_seconds",)


async def _read_both(target: str, prom_url: str) -> tuple[Scrape | None, Scrape | None]:
    async with httpx.AsyncClient() as http:
        direct = (await DirectSource(http, [target]).read())[target]
        via = (await PrometheusSource(http, prom_url, [target]).read())[target]
    return direct, via


def _cumulative(scrape: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        k: v
        for k, v in scrape.samples.items()
        if k[0].startswith("surgeguard_")
        and k[0].endswith(CUMULATIVE)
        and not k[0].startswith(TICKING)
    }


def _settled(target: str, prom_url: str, timeout_s: float = 20.0) -> tuple[Scrape, Scrape]:
    """A direct read and a Prometheus read once Prometheus has scraped what the target
    now holds (traffic has stopped). The first scrape of a new Prometheus comes only
    after its target discovery runs, about 5 s after it starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        direct, via = asyncio.run(_read_both(target, prom_url))
        assert direct is not None
        if via is not None and _cumulative(via) == _cumulative(direct):
            return direct, via
        if time.monotonic() >= deadline and via is not None:
            d, v = _cumulative(direct), _cumulative(via)
            print(
                "DIFF",
                [(k, d.get(k), v.get(k)) for k in set(d) | set(v) if d.get(k) != v.get(k)][:8],
            )
        assert time.monotonic() < deadline, "prometheus never caught up with the target"
        time.sleep(0.25)


def test_prometheus_and_direct_scrapes_give_the_same_signals(
    start_target: StartTarget, tmp_path: Path
) -> None:
    target = start_target()
    instance = target.url.removeprefix("http://")
    with prometheus(scrape_config([instance]), tmp_path / "prometheus") as prom_url:
        with httpx.Client(base_url=target.url, headers=API_KEY, timeout=5) as client:
            for i in range(30):
                assert client.get(f"/items/{i + 1}").status_code == 200
            first_direct, first_via = _settled(target.url, prom_url)
            for i in range(40):
                client.get(f"/items/{i + 100}")
                client.get("/ping")
        direct, via = _settled(target.url, prom_url)

    assert len(_cumulative(via)) > 100  # every family came through, labels and all
    a = compute("r", first_direct, direct, slo_s=0.25)
    b = compute("r", first_via, via, slo_s=0.25)
    # Window lengths differ (scrape times); counts and quantiles must not.
    assert a.admitted_per_s * a.window_s == pytest.approx(80)
    assert b.admitted_per_s * b.window_s == pytest.approx(80)
    assert (a.p50_s, a.p99_s) == pytest.approx((b.p50_s, b.p99_s))
    assert a.concurrency_limit == b.concurrency_limit == 64
    assert a.dependencies.keys() == b.dependencies.keys() != set()
    # The replica's CPU comes through too (the event-loop-lag rule needs it).
    assert 0.0 <= a.cpu_utilisation < 4 and 0.0 <= b.cpu_utilisation < 4


def test_an_unreachable_prometheus_marks_every_target_stale() -> None:
    async def read() -> dict[str, Scrape | None]:
        async with httpx.AsyncClient() as http:
            source = PrometheusSource(
                http, f"http://127.0.0.1:{free_port()}", ["http://127.0.0.1:8000"]
            )
            return await source.read()

    assert asyncio.run(read()) == {"http://127.0.0.1:8000": None}
