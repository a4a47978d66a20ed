"""The inner loop's runtime (issue 14, item 1) with a fake clock and a real limiter: what
the door records, when a window closes, the controller's knob as the ceiling (re-clamped
at once, a pin enforced exactly), the metrics, and ``off`` as the replica without it."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from surgeguard import Route, protect
from surgeguard import metric_names as names
from surgeguard.admission import AdmissionMiddleware, RouteTable
from surgeguard.controlplane import ControlState
from surgeguard.inner.aimd import Aimd
from surgeguard.inner.algorithms import build_algorithm
from surgeguard.inner.loop import MAX_WINDOWS, MIN_SAMPLES, InnerLoop, InnerMetrics
from surgeguard.inner.samples import WindowSamples
from surgeguard.limiter import Limiter
from surgeguard.metrics import AdmissionMetrics
from surgeguard.priority import Priority
from surgeguard.settings import ReplicaSettings, SettingsError
from tests.support.clock import FakeClock

WINDOW_S = 0.1


def fill(samples: WindowSamples, n: int, latency_s: float, in_flight: int = 30) -> None:
    for _ in range(n):
        samples.record(latency_s, 200, in_flight)


def loop_over(limiter: Limiter, clock: FakeClock, **over: Any) -> tuple[InnerLoop, Any]:
    registry = CollectorRegistry()
    loop = InnerLoop(
        Aimd(target_s=0.2, knee_gain=0, futile_hold_s=0),  # the runtime, the SLO rule alone
        limiter,
        floor=1,
        ceiling=limiter.limit,
        window_s=WINDOW_S,
        metrics=InnerMetrics(registry, lambda: limiter.limit),
        clock=clock,
        **over,
    )
    return loop, registry


def test_the_samples_sum_up_a_window_and_start_a_new_one() -> None:
    samples = WindowSamples(capacity=8)
    for n, latency in enumerate((0.05, 0.01, 0.03, 0.02, 0.04, 0.5, 0.06, 0.07, 0.08, 0.09)):
        samples.record(latency, 503 if n == 5 else 200, in_flight=n + 1)
    w = samples.take(now=5.0, limit=12, floor=1, ceiling=20)
    assert (w.now, w.limit, w.floor, w.ceiling) == (5.0, 12, 1, 20)
    assert (w.completed, w.drops, w.peak_in_flight) == (10, 1, 10)  # exact past capacity
    # The latency statistics come from the first 8 kept: 0.01 .. 0.07 and 0.5.
    assert w.min_s == 0.01 and w.p50_s == 0.04 and w.p90_s == 0.5
    assert w.mean_s == pytest.approx(0.78 / 8)
    empty = samples.take(now=5.1, limit=12, floor=1, ceiling=20)
    assert empty.completed == 0 and math.isnan(empty.p90_s) and not empty.seen


def test_a_window_closes_once_it_has_enough_requests_or_has_waited_long_enough(
    fake_clock: FakeClock,
) -> None:
    limiter = Limiter(40, 10, 0.2)
    loop, _ = loop_over(limiter, fake_clock)
    fill(loop.samples, MIN_SAMPLES - 1, 2.0)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert limiter.limit == 40 and loop.samples.count == MIN_SAMPLES - 1  # still gathering
    loop.samples.record(2.0, 200, 30)
    loop.tick()
    assert limiter.limit == 20 and loop.samples.count == 0  # 10x the target: halved

    loop.samples.record(0.01, 200, 20)  # one fast request, then a quiet spell
    for _ in range(MAX_WINDOWS - 1):
        fake_clock.advance(WINDOW_S)
        loop.tick()
        assert loop.samples.count == 1
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert loop.samples.count == 0 and limiter.limit == 22  # recovering: +10%


def test_every_move_is_counted_and_the_gauge_is_the_limit_enforced(
    fake_clock: FakeClock,
) -> None:
    limiter = Limiter(40, 10, 0.2)
    loop, registry = loop_over(limiter, fake_clock)
    fill(loop.samples, 20, 2.0)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    fill(loop.samples, 20, 0.01, in_flight=20)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert registry.get_sample_value(names.INNER_LIMIT) == 22.0
    moves = names.INNER_MOVES_TOTAL
    assert registry.get_sample_value(moves, {"direction": "cut"}) == 1.0
    assert registry.get_sample_value(moves, {"direction": "grow"}) == 1.0
    assert loop.moves == {"cut": 1, "grow": 1}


def test_the_knob_is_the_ceiling_re_clamped_at_once_and_a_pin_is_exact(
    fake_clock: FakeClock,
) -> None:
    limiter = Limiter(40, 10, 0.2)
    loop, _ = loop_over(limiter, fake_clock)
    fill(loop.samples, 20, 0.25)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert limiter.limit == 32

    # The controller lowers the knob under the inner limit: clamped at once.
    assert loop.bounded(25, pinned=False) == 25
    loop.set_bounds(25, pinned=False)
    limiter.set_limits(limit=25)
    fill(loop.samples, 20, 0.01, in_flight=25)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert limiter.limit == 25  # far under target and in use, but the knob is the ceiling
    # Raised again: the inner limit stays where it is and grows by itself.
    assert loop.bounded(64, pinned=False) == 25

    # Pinned: the pin is enforced exactly, and the loop does not move it.
    assert loop.bounded(50, pinned=True) == 50
    loop.set_bounds(50, pinned=True)
    limiter.set_limits(limit=50)
    fill(loop.samples, 20, 5.0)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert limiter.limit == 50 and loop.samples.count == 0
    # Unpinned: the algorithm starts afresh from the knob.
    assert loop.bounded(60, pinned=False) == 60
    loop.set_bounds(60, pinned=False)
    limiter.set_limits(limit=60)
    fill(loop.samples, 20, 0.19)
    fake_clock.advance(WINDOW_S)
    loop.tick()
    assert limiter.limit == 60


def test_the_door_records_each_admitted_request_and_nothing_it_turns_away() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = 500 if scope["path"] == "/fail" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limiter = Limiter(1, 0, 0.2)
    samples = WindowSamples()
    routes = RouteTable({"/ok": Route("ok", Priority.NORMAL), "/fail": Route("f", Priority.NORMAL)})
    metrics = AdmissionMetrics(CollectorRegistry(), slo_seconds=0.25, routes=routes.names)
    door = AdmissionMiddleware(app, limiter, routes, metrics, samples=samples)

    async def call(path: str) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            return None

        scope = {"type": "http", "path": path, "method": "GET", "headers": []}
        await door(scope, receive, send)

    async def scenario() -> None:
        await call("/ok")
        await call("/fail")
        limiter.in_flight = 1  # full: the next one is turned away (queue 0)
        await call("/ok")
        limiter.in_flight = 0

    asyncio.run(scenario())
    w = samples.take(now=0.0, limit=1, floor=1, ceiling=1)
    assert (w.completed, w.drops, w.peak_in_flight) == (2, 1, 1)
    assert 0.0 <= w.min_s <= w.p90_s < 1.0


def _shop(**settings: Any) -> Any:
    return protect(
        FastAPI(), routes={"/x": Route("x", Priority.NORMAL)}, settings=ReplicaSettings(**settings)
    )


def _gauge(protection: Any, name: str) -> float | None:
    value: float | None = protection.registry.get_sample_value(name)
    return value


def test_protect_bounds_the_inner_loop_by_the_applied_knob_and_its_pin() -> None:
    guard = _shop(inner_loop="aimd", concurrency_limit=40)
    assert guard.inner is not None and guard.door.samples is guard.inner.samples
    assert guard.inner.algorithm == build_algorithm("aimd", target_s=0.2)  # 250 ms less 20%
    guard.limiter.set_limits(limit=30)  # as if the inner loop had cut
    guard.apply_control(ControlState(version=1, knobs={"concurrency_limit": 20}))
    assert guard.limiter.limit == 20  # re-clamped under the new knob at once
    assert _gauge(guard, names.CONCURRENCY_LIMIT) == 20.0  # the knob, for the controller
    guard.limiter.set_limits(limit=12)
    assert _gauge(guard, names.INNER_LIMIT) == 12.0
    assert _gauge(guard, names.CONCURRENCY_LIMIT) == 20.0
    pinned = ControlState(
        version=2, knobs={"concurrency_limit": 35}, pins=frozenset({"concurrency_limit"})
    )
    guard.apply_control(pinned)
    assert guard.limiter.limit == 35 and guard.inner.pinned


def test_off_is_the_replica_without_an_inner_loop() -> None:
    guard = _shop(concurrency_limit=40)
    assert guard.inner is None and guard.door.samples is None
    guard.apply_control(ControlState(version=1, knobs={"concurrency_limit": 20}))
    assert guard.limiter.limit == 20
    assert _gauge(guard, names.INNER_LIMIT) == 20.0 == _gauge(guard, names.CONCURRENCY_LIMIT)
    moves = names.INNER_MOVES_TOTAL
    assert guard.registry.get_sample_value(moves, {"direction": "cut"}) == 0.0


def test_bad_inner_loop_settings_stop_start_up_naming_them() -> None:
    with pytest.raises(SettingsError, match="vegas has no parameter timeout_s"):
        ReplicaSettings.load(inner_loop="vegas", inner_params="timeout_s=1")
    with pytest.raises(SettingsError, match="inner_params are set but inner_loop is off"):
        ReplicaSettings.load(inner_params="backoff=0.9")
    with pytest.raises(SettingsError, match="--inner-loop='bbr'"):
        ReplicaSettings.load(inner_loop="bbr")
    chosen = ReplicaSettings.load(inner_loop="netflix-aimd", inner_params="timeout_s=0.25")
    assert chosen.inner_algorithm() == build_algorithm("netflix-aimd", {"timeout_s": 0.25})
