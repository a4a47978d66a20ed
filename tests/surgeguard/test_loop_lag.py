"""The event-loop lag monitor: how late its timer fired, as a histogram (fake clock)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from surgeguard.loop_lag import LoopLagMonitor
from surgeguard.metric_names import EVENT_LOOP_LAG_SECONDS
from tests.support.clock import FakeClock


class LateSleeper:
    """An ``asyncio.sleep`` stand-in: each sleep moves the clock by what was asked
    plus the next lateness in ``late_s`` (seconds)."""

    def __init__(self, clock: FakeClock, late_s: list[float]) -> None:
        self.clock = clock
        self.late_s = list(late_s)

    async def __call__(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would
        self.clock.advance(seconds + (self.late_s.pop(0) if self.late_s else 0.0))


def value(registry: CollectorRegistry, suffix: str, **labels: str) -> float:
    found = registry.get_sample_value(f"{EVENT_LOOP_LAG_SECONDS}{suffix}", labels)
    assert found is not None, (suffix, labels)
    return found


async def test_each_wakeup_records_how_late_it_was(fake_clock: FakeClock) -> None:
    registry = CollectorRegistry()
    late = [0.0002, 0.003, 0.18, 0.0]
    monitor = LoopLagMonitor(
        registry, interval_s=0.05, clock=fake_clock, sleep=LateSleeper(fake_clock, late)
    )
    await monitor.run(wakeups=4)
    assert value(registry, "_count") == 4
    assert value(registry, "_sum") == pytest.approx(sum(late))
    assert value(registry, "_bucket", le="0.0005") == 2  # 0.2 ms and none
    assert value(registry, "_bucket", le="0.005") == 3
    assert value(registry, "_bucket", le="0.15") == 3
    assert value(registry, "_bucket", le="0.2") == 4
    assert value(registry, "_bucket", le="2.0") == 4 and value(registry, "_bucket", le="+Inf") == 4


async def test_a_timer_firing_early_is_no_lag(fake_clock: FakeClock) -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, clock=fake_clock, sleep=LateSleeper(fake_clock, [-1e-6]))
    await monitor.run(wakeups=1)
    assert value(registry, "_sum") == 0.0
    assert value(registry, "_bucket", le="0.0005") == 1


async def test_start_and_stop_on_the_running_loop(fake_clock: FakeClock) -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, clock=fake_clock, sleep=LateSleeper(fake_clock, []))
    monitor.start()
    monitor.start()  # idempotent: one task
    for _ in range(5):
        await asyncio.sleep(0)
    await monitor.stop()
    counted = value(registry, "_count")
    assert counted >= 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert value(registry, "_count") == counted  # stopped: no more wakeups
    await monitor.stop()  # stopping twice is harmless


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0 seconds, got 0"):
        LoopLagMonitor(CollectorRegistry(), interval_s=0)
