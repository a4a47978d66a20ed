"""Issue 16: a bottleneck that holds still and is right (pure, fake signals, fake clock).

What a new operator saw: the name changed every second (recommendations, db, cache,
cpu, db, cache, cpu, payments, admission within 30 s), and ``cache: 18% of its 22 slots
busy, p99 73 ms = 40.6x its healthy 2 ms`` was named while db sat at 100%."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from surgeguard_controller.bottleneck import Bottleneck, Held, held_json, hold_name, name_bottleneck
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.decide import Decider, current_knobs
from surgeguard_controller.sensing.signals import DependencySignals
from tests.controller.test_decide import dep, signals
from tests.support.clock import FakeClock

BASELINES = {"db": 0.01, "cache": 0.002, "payments": 0.05}


def name(
    dependencies: Mapping[str, DependencySignals],
    config: ControllerConfig | None = None,
    **kw: object,
) -> Bottleneck:
    s = signals(dependencies=dependencies, **kw)
    return name_bottleneck(s, lambda d: BASELINES[d], config or ControllerConfig())


# -- the right name ---------------------------------------------------------------------------

IDLE_CACHE = dep("cache", p50=0.002, p99=0.073, util=0.18, limit=22)
SATURATED_DB = dep("db", p50=0.03, p99=0.06, util=1.0, limit=16)


def test_an_idle_cache_is_not_named_over_a_saturated_db() -> None:
    """The issue's numbers: the cache's 36x inflation weighed 0.18 x 36 = 6.6 against
    db's 1.0 x 6 = 6 and won. An idle dependency's latency does not count."""
    b = name({"cache": IDLE_CACHE, "db": SATURATED_DB})
    assert b.name == "db"
    assert b.sentence == "db: 100% of its 16 slots busy, p99 60 ms = 6.0x its healthy 10 ms"
    assert b.scores["cache"] == pytest.approx(0.18)  # utilisation alone
    assert b.scores["db"] == pytest.approx(6.0)
    assert b.sentences["cache"] == (
        "cache: 18% of its 22 slots busy, p99 73 ms = 36.5x its healthy 2 ms, "
        "but idle and not failing: its latency does not count"
    )


def test_an_idle_inflated_dependency_alone_is_not_named() -> None:
    assert name({"cache": IDLE_CACHE, "db": dep(util=0.3)}).name == "none"


def test_an_idle_dependency_that_fails_is_named_when_nothing_is_saturated() -> None:
    """Inflation counts when the dependency is failing, busy or not."""
    failing = dep("payments", p50=0.05, p99=0.9, util=0.2, timeout_rate=0.3)
    b = name({"payments": failing, "db": dep(util=0.3)})
    assert b.name == "payments"
    assert b.sentence.startswith("payments: 20% of its 16 slots busy, p99 900 ms = 18.0x")


@pytest.mark.parametrize(
    "other",
    [
        dep("cache", p50=0.002, p99=0.2, util=0.3, limit=22, timeout_rate=0.5),  # failing
        dep("cache", p50=0.002, p99=0.2, util=0.2, limit=22, rejected_per_s=5.0),  # turning away
    ],
    ids=["failing", "bulkhead-full"],
)
def test_under_half_busy_is_never_named_while_another_is_at_80_percent(
    other: DependencySignals,
) -> None:
    """The cache's 100x inflation counts (it fails, or its bulkhead turns calls away):
    beside a db at 50% it is named; beside a db at 85% it is not, though it weighs more."""
    assert name({"cache": other, "db": dep("db", util=0.5)}).name == "cache"
    b = name({"cache": other, "db": dep("db", p50=0.03, p99=0.04, util=0.85)})
    assert b.name == "db"
    assert b.scores["cache"] > b.scores["db"]


def test_a_busy_inflated_dependency_can_outweigh_a_saturated_one() -> None:
    """Over half busy with a 20x p99, payments is the slow one, not db at 90% and 1.2x."""
    payments = dep("payments", p50=0.05, p99=1.0, util=0.6)
    db = dep("db", p50=0.01, p99=0.012, util=0.9)
    assert name({"payments": payments, "db": db}).name == "payments"


def test_a_dependency_latency_is_weighed_without_the_loops_lag() -> None:
    """A 2 ms cache measured at 73 ms while the loop lags 70 ms: 3 ms is its own."""
    cache = dep("cache", p50=0.002, p99=0.073, util=0.6, limit=22)
    b = name({"cache": cache, "db": dep(util=0.3)}, loop_lag_p99_s=0.07, p99=0.1)
    assert b.name == "none"
    assert b.sentences["cache"] == (
        "cache: 60% of its 22 slots busy, p99 73 ms (3 ms without the loop's lag) = 1.5x "
        "its healthy 2 ms"
    )


def test_thresholds_are_config() -> None:
    deps = {"cache": dep("cache", p50=0.002, p99=0.2, util=0.45, limit=22), "db": SATURATED_DB}
    loose = ControllerConfig(bottleneck_busy=0.4)
    assert name(deps, loose).name == "cache"  # 45% now counts as busy: 0.45 x 100
    assert name({"db": dep(util=0.75)}, ControllerConfig(bottleneck_saturated=0.7)).name == "db"


# -- event-loop lag and the CPU -------------------------------------------------------------

LAGGED: Mapping[str, object] = {"p99": 0.23, "loop_lag_p99_s": 0.18}


def test_the_replicas_own_saturated_cpu_is_named_over_a_saturated_db() -> None:
    """The loop lags 180 of 230 ms behind the replica's own work: the db looking full
    is what a late loop does to every await."""
    b = name({"db": SATURATED_DB}, **LAGGED, cpu_utilisation=0.97)  # type: ignore[arg-type]
    assert b.name == "cpu"
    assert b.sentence.endswith("at 97% of a core: the replica's own work saturates its CPU")


def test_a_cpu_taken_elsewhere_is_named_cpu_with_its_own_sentence() -> None:
    s = signals(dependencies={"db": SATURATED_DB}, **LAGGED, cpu_utilisation=0.3)  # type: ignore[arg-type]
    b = Decider().decide(s, current_knobs(s), now=0.0).bottleneck
    assert b.name == "cpu" and "another process is taking the CPU" in b.sentence


@pytest.mark.parametrize(
    ("lag", "cpu"),
    [(0.02, 0.97), (0.18, math.nan)],
    ids=["the-loop-keeps-up", "cpu-unknown"],
)
def test_without_lag_evidence_the_db_is_named(lag: float, cpu: float) -> None:
    b = name({"db": SATURATED_DB}, p99=0.23, loop_lag_p99_s=lag, cpu_utilisation=cpu)
    assert b.name == "db"


def test_rejection_work_comes_before_the_replicas_own_cpu() -> None:
    s = signals(
        dependencies={"db": SATURATED_DB},
        p99=0.24,
        admitted_per_s=40,
        rejected_per_s={"client_share": 14_000.0},
        loop_lag_p99_s=0.18,
        cpu_utilisation=0.98,
    )
    assert Decider().bottleneck(s).name == "rejection_work"


# -- a name that holds still ----------------------------------------------------------------


def pick(n: str, sentence: str = "", **scores: float) -> Bottleneck:
    return Bottleneck(n, sentence or f"{n}: this tick", scores or {n: 1.0})


def run(names: list[str], clock: FakeClock, hold_ticks: int = 3) -> list[Held]:
    """One tick a second: the held state after each pick."""
    held: Held | None = None
    out = []
    for n in names:
        held = hold_name(held, pick(n), now=clock(), hold_ticks=hold_ticks)
        out.append(held)
        clock.advance(1.0)
    return out


def test_flapping_picks_keep_one_name(fake_clock: FakeClock) -> None:
    """The issue's sequence, each for a tick or two: the first name holds throughout."""
    start = fake_clock()
    flapping = ["db", "cache", "db", "cpu", "db", "cache", "cache", "db", "payments", "db"]
    held = run(flapping, fake_clock)
    assert [h.name for h in held] == ["db"] * len(flapping)
    assert all(h.since == start for h in held)
    assert [h.held_s for h in held] == [float(n) for n in range(len(flapping))]
    assert [h.leading for h in held] == flapping


def test_a_sustained_change_switches_after_hold_ticks(fake_clock: FakeClock) -> None:
    start = fake_clock()
    held = run(["db", "db", "db", "cache", "cache", "cache", "cache"], fake_clock)
    assert [h.name for h in held] == ["db", "db", "db", "db", "db", "cache", "cache"]
    # The new name took the lead at its first tick in front (the fourth).
    assert held[5].since == held[6].since == start + 3
    assert (held[5].held_s, held[6].held_s) == (2.0, 3.0)


def test_a_name_out_of_the_lead_among_several_is_replaced_by_the_most_frequent(
    fake_clock: FakeClock,
) -> None:
    """db stopped leading; cache and none took turns: cache, the most frequent of
    the three ticks, takes over (a name never sticks because its rivals alternate)."""
    start = fake_clock()
    held = run(["db", "cache", "none", "cache"], fake_clock)
    assert [h.name for h in held] == ["db", "db", "db", "cache"]
    assert held[-1].since == start + 1


def test_one_hold_tick_follows_every_pick(fake_clock: FakeClock) -> None:
    held = run(["db", "cache", "db"], fake_clock, hold_ticks=1)
    assert [h.name for h in held] == ["db", "cache", "db"]


def test_a_held_name_reads_with_this_ticks_numbers_and_says_who_leads(
    fake_clock: FakeClock,
) -> None:
    first = Bottleneck("db", "db: 100% busy", {"db": 6.0}, {"db": "db: 100% busy"})
    held = hold_name(None, first, now=fake_clock(), hold_ticks=3)
    fake_clock.advance(1.0)
    challenger = Bottleneck(
        "cache", "cache: 90% busy", {"db": 2.0, "cache": 3.0}, {"db": "db: 85% busy"}
    )
    held = hold_name(held, challenger, now=fake_clock(), hold_ticks=3)
    shown = held_json(held, 3)
    assert shown == {
        "name": "db",
        "sentence": "db: 85% busy [held: cache leads now, 1 of 3 ticks out of the lead to change]",
        "scores": {"db": 2.0, "cache": 3.0},
        "since": 1000.0,
        "held_s": 1.0,
        "leading": "cache",
    }
    fake_clock.advance(1.0)
    back = hold_name(held, first, now=fake_clock(), hold_ticks=3)
    assert held_json(back, 3)["sentence"] == "db: 100% busy"
    assert held_json(None, 3) == {
        "name": "none",
        "sentence": "no data yet",
        "scores": {},
        "since": None,
        "held_s": 0.0,
        "leading": "none",
    }


def test_hold_and_weighing_settings_are_validated() -> None:
    assert ControllerConfig().bottleneck_hold_ticks == 3
    with pytest.raises(ValueError, match=r"bottleneck_hold_ticks must be in \[1, 1000\] ticks"):
        ControllerConfig(bottleneck_hold_ticks=0)
    with pytest.raises(ValueError, match=r"obey_grace_ticks must be in \[1, 1000\] ticks"):
        ControllerConfig(obey_grace_ticks=0)
    with pytest.raises(ValueError, match=r"0 < busy <= saturated <= 1, got 0\.9 and 0\.8"):
        ControllerConfig(bottleneck_busy=0.9)
