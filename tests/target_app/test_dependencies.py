"""Simulated dependencies: the processor-sharing core with plain numbers (time is data,
nothing sleeps), then the asyncio driver for real with latencies of a few ms, judged by
ratios measured side by side in the same test, never by absolute timings."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from surgeguard.chaos import CALM, Chaos
from surgeguard_target_app.dependencies import (
    DependencyError,
    ProcessorSharing,
    SimulatedDependencies,
    SimulatedDependency,
)

T0 = 1000.0


# --- the pure core ---------------------------------------------------------------------


def test_one_job_under_capacity_takes_its_work() -> None:
    ps = ProcessorSharing(2)
    job = ps.arrive(T0, 0.1)
    assert ps.next_completion(T0) == pytest.approx(T0 + 0.1)
    assert ps.depart_due(T0 + 0.099) == []
    assert ps.depart_due(T0 + 0.1) == [job]
    assert ps.active == 0


def test_twice_capacity_arriving_together_each_take_twice_as_long() -> None:
    ps = ProcessorSharing(2)
    jobs = [ps.arrive(T0, 0.1) for _ in range(4)]
    assert ps.active == 4
    assert ps.next_completion(T0) == pytest.approx(T0 + 0.2)
    assert ps.depart_due(T0 + 0.199) == []
    assert sorted(ps.depart_due(T0 + 0.2)) == jobs
    assert ps.next_completion(T0 + 0.2) is None


def test_arrival_mid_way_slows_the_others_as_processor_sharing_predicts() -> None:
    # C=2. A and B (work 0.1) run at full speed until C (work 0.1) arrives at +0.05.
    # Then n=3, rate 2/3: A and B need 0.05 more -> 0.075 s -> done at +0.125, by when
    # C has done 0.05 too; alone at rate 1 it needs 0.05 more -> done at +0.175.
    ps = ProcessorSharing(2)
    a, b = ps.arrive(T0, 0.1), ps.arrive(T0, 0.1)
    c = ps.arrive(T0 + 0.05, 0.1)
    assert ps.next_completion(T0 + 0.05) == pytest.approx(T0 + 0.125)
    assert ps.depart_due(T0 + 0.124) == []
    assert ps.depart_due(T0 + 0.125) == [a, b]
    assert ps.next_completion(T0 + 0.125) == pytest.approx(T0 + 0.175)
    assert ps.depart_due(T0 + 0.174) == []
    assert ps.depart_due(T0 + 0.175) == [c]


def test_departures_between_calls_are_found_in_order_with_the_right_rates() -> None:
    # C=1, works 0.1 and 0.3 at T0: both at rate 1/2 until the short one is done at
    # +0.2; the long one has 0.2 left at rate 1 -> done at +0.4. Nobody asks at +0.2.
    ps = ProcessorSharing(1)
    short, long = ps.arrive(T0, 0.1), ps.arrive(T0, 0.3)
    assert ps.cancel(T0 + 0.3, 999) is False  # an unknown id is harmless
    assert ps.next_completion(T0 + 0.3) == pytest.approx(T0 + 0.2)  # due, not collected
    assert ps.depart_due(T0 + 0.39) == [short]
    assert ps.next_completion(T0 + 0.39) == pytest.approx(T0 + 0.4)
    assert ps.depart_due(T0 + 0.4) == [long]

    again = ProcessorSharing(1)
    jobs = [again.arrive(T0, 0.1), again.arrive(T0, 0.3)]
    assert again.depart_due(T0 + 1.0) == jobs


def test_cancel_frees_its_share() -> None:
    # C=1, two jobs of 0.1 share at rate 1/2. At +0.05 (each done 0.025) one gives up;
    # the other has 0.075 left at full speed -> done at +0.125 instead of +0.2.
    ps = ProcessorSharing(1)
    stays, leaves = ps.arrive(T0, 0.1), ps.arrive(T0, 0.1)
    assert ps.cancel(T0 + 0.05, leaves) is True
    assert ps.active == 1
    assert ps.cancel(T0 + 0.05, leaves) is False
    assert ps.next_completion(T0 + 0.05) == pytest.approx(T0 + 0.125)
    assert ps.depart_due(T0 + 0.125) == [stays]


def test_cancel_after_finishing_is_not_reported() -> None:
    ps = ProcessorSharing(1)
    job = ps.arrive(T0, 0.1)
    assert ps.cancel(T0 + 0.2, job) is False
    assert ps.depart_due(T0 + 0.2) == []


def test_resize_changes_the_rate_from_then_on() -> None:
    # C=1, two jobs of 0.1: at +0.1 each has 0.05 left; with C=2 that takes 0.05 more.
    ps = ProcessorSharing(1)
    jobs = [ps.arrive(T0, 0.1), ps.arrive(T0, 0.1)]
    ps.resize(T0 + 0.1, 2)
    assert ps.capacity == 2
    assert ps.next_completion(T0 + 0.1) == pytest.approx(T0 + 0.15)
    assert ps.depart_due(T0 + 0.15) == jobs


def test_next_completion_is_none_when_idle_and_zero_work_is_due_at_once() -> None:
    ps = ProcessorSharing(3)
    assert ps.next_completion(T0) is None
    job = ps.arrive(T0, 0.0)
    assert ps.next_completion(T0) == T0
    assert ps.depart_due(T0) == [job]
    assert ps.next_completion(T0) is None


def test_core_rejects_bad_input_with_the_range() -> None:
    with pytest.raises(ValueError, match=r"capacity must be an integer in \[1, inf\).*got 0"):
        ProcessorSharing(0)
    ps = ProcessorSharing(1)
    with pytest.raises(ValueError, match=r"work_s must be .* >= 0, got -0.1"):
        ps.arrive(T0, -0.1)
    ps.arrive(T0, 0.1)
    with pytest.raises(ValueError, match="time went backwards"):
        ps.depart_due(T0 - 1)


# --- the asyncio driver, for real but fast ---------------------------------------------


async def timed(dep: SimulatedDependency, work_factor: float = 1.0) -> float:
    start = time.perf_counter()
    await dep.call(work_factor)
    return time.perf_counter() - start


async def fastest(dep: SimulatedDependency, work_factor: float = 1.0, tries: int = 3) -> float:
    """Timer noise only ever makes a call late, so the fastest of a few is the best guess."""
    return min([await timed(dep, work_factor) for _ in range(tries)])


async def test_one_call_takes_about_its_base_latency() -> None:
    dep = SimulatedDependency("db", 2, 0.02)
    elapsed = await timed(dep)
    assert elapsed >= 0.02 * 0.99  # never before its work is done
    assert elapsed < 0.02 + 1.0  # loose: a loaded machine may wake us late
    assert (dep.calls, dep.in_service, dep.peak_in_service) == (1, 0, 1)


async def test_four_times_capacity_takes_about_four_times_as_long() -> None:
    dep = SimulatedDependency("db", 2, 0.03)
    alone = await fastest(dep)
    each = await asyncio.gather(*(timed(dep) for _ in range(8)))
    assert 2.5 <= max(each) / alone <= 6.0
    assert min(each) / alone >= 2.5  # processor sharing: everyone is slowed, not queued
    assert (dep.calls, dep.in_service, dep.peak_in_service) == (11, 0, 8)


async def test_error_rate_one_always_raises_after_the_work() -> None:
    dep = SimulatedDependency("payments", 4, 0.002, rng=random.Random(7))
    dep.set_chaos(Chaos(error_rate=1.0))
    for _ in range(5):
        with pytest.raises(DependencyError, match="payments: simulated failure") as info:
            await dep.call()
        assert info.value.name == "payments"
    assert (dep.calls, dep.in_service) == (5, 0)


async def test_latency_multiplier_slows_a_call_accordingly() -> None:
    dep = SimulatedDependency("cache", 2, 0.03)
    calm = await fastest(dep)
    dep.set_chaos(Chaos(latency_multiplier=3.0))
    slow = await fastest(dep)
    assert 2.0 <= slow / calm <= 4.5


async def test_a_cancelled_call_leaves_and_frees_its_share() -> None:
    dep = SimulatedDependency("db", 1, 0.03)
    calm = await fastest(dep)
    with pytest.raises(TimeoutError):  # what a bulkhead timeout does to the caller
        await asyncio.wait_for(dep.call(work_factor=100), timeout=0.01)
    assert dep.in_service == 0
    # If the abandoned call (~3 s of work) still held its share, these would take ~2x.
    after = await fastest(dep)
    assert after / calm < 1.5


async def test_capacity_can_change_while_calls_are_inside() -> None:
    dep = SimulatedDependency("db", 1, 0.03)
    alone = await fastest(dep)
    calls = [asyncio.create_task(timed(dep)) for _ in range(4)]
    await asyncio.sleep(0)
    dep.capacity = 4  # from now on all four run at full speed
    each = await asyncio.gather(*calls)
    assert max(each) / alone < 2.0  # at capacity 1 they would take ~4x


def test_settings_are_validated_naming_the_dependency() -> None:
    dep = SimulatedDependency("recommendations", 2, 0.01)
    with pytest.raises(ValueError, match=r"recommendations: capacity .* \[1, inf\).*got 0"):
        dep.capacity = 0
    with pytest.raises(ValueError, match=r"recommendations: base_latency_s .* \(0, inf\)"):
        dep.base_latency_s = 0.0
    with pytest.raises(ValueError, match=r"db: base_latency_s .*got -1"):
        SimulatedDependency("db", 1, -1)
    dep.capacity, dep.base_latency_s = 5, 0.5
    assert (dep.capacity, dep.base_latency_s) == (5, 0.5)


# --- the container -----------------------------------------------------------------------


def build() -> SimulatedDependencies:
    return SimulatedDependencies.build(
        {"db": 10, "cache": 50, "recommendations": 5, "payments": 4},
        {"db": 20.0, "cache": 1.0, "recommendations": 80.0, "payments": 120.0},
        rng=random.Random(1),
    )


def test_build_from_settings_values() -> None:
    deps = build()
    assert list(deps) == ["db", "cache", "recommendations", "payments"]
    assert (deps["db"].capacity, deps["db"].base_latency_s) == (10, 0.02)
    assert deps["payments"].base_latency_s == pytest.approx(0.12)
    assert all(dep.chaos == CALM for dep in deps.values())
    with pytest.raises(KeyError, match="unknown dependency 'search'"):
        deps["search"]
    with pytest.raises(ValueError, match="must name the same dependencies"):
        SimulatedDependencies.build({"db": 1}, {"cache": 1.0})


def test_apply_chaos_calms_the_dependencies_not_named() -> None:
    deps = build()
    slow = Chaos(latency_multiplier=5.0)
    deps.apply_chaos({"db": slow, "cache": Chaos(error_rate=0.5)})
    deps.apply_chaos({"db": slow})
    assert deps["db"].chaos == slow
    assert deps["cache"].chaos == CALM
    with pytest.raises(ValueError, match="unknown dependencies \\['search'\\]"):
        deps.apply_chaos({"search": slow, "db": CALM})
    assert deps["db"].chaos == slow  # nothing applied


async def test_seeded_failures_are_reproducible_per_dependency() -> None:
    async def pattern(deps: SimulatedDependencies) -> list[bool]:
        dep = deps["payments"]
        dep.base_latency_s = 0.001
        dep.set_chaos(Chaos(error_rate=0.5))
        results = await asyncio.gather(*(dep.call() for _ in range(20)), return_exceptions=True)
        return [isinstance(r, DependencyError) for r in results]

    first, second = await pattern(build()), await pattern(build())
    assert first == second
    assert 0 < sum(first) < 20
