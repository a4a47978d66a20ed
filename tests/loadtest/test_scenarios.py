"""Each scenario's schedule, second by second, and the Locust shapes that follow it
on a fake clock (no Locust run, no sleeping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from surgeguard.priority import Priority
from surgeguard_loadtest.scenarios import (
    ALL_SCENARIOS,
    MAX_USERS,
    SCENARIOS,
    ScenarioError,
    build,
    defaults,
    ticks,
)


def users_at(name: str, users: int, duration_s: float) -> dict[float, int]:
    return {t: u for t, (u, _) in ticks(build(name, users, duration_s))}


def test_spike_reaches_ten_thousand_users_within_ten_seconds_and_comes_back() -> None:
    scenario = build("spike")  # the defaults: 10,000 users, 110 s
    schedule = ticks(scenario)
    assert scenario.users == MAX_USERS == 10_000
    assert len(schedule) == 110  # one tick a second, then None: the run ends
    assert scenario.tick(110.0) is None
    by_second = dict(schedule)
    baseline = by_second[0.0][0]
    assert baseline == 200  # 2% of the spike
    assert all(by_second[float(t)][0] == baseline for t in range(22))  # 20%: baseline
    up = [(t, u, rate) for t, (u, rate) in schedule if u == 10_000]
    first = up[0][0]
    assert first == 22.0
    # Locust is told to add the difference at a rate that gets there within 10 s.
    assert (10_000 - baseline) / up[0][2] <= 10.0
    assert all(by_second[float(t)][0] == 10_000 for t in range(22, 77))  # held to 70%
    assert all(by_second[float(t)][0] == baseline for t in range(77, 110))  # last 30%


def test_step_is_a_staircase_of_eight_equal_stairs_up_to_the_users() -> None:
    by_second = users_at("step", 800, 80)
    stairs = [by_second[float(t)] for t in range(0, 80, 10)]
    assert stairs == [100, 200, 300, 400, 500, 600, 700, 800]
    assert all(by_second[float(t)] == by_second[float(t - t % 10)] for t in range(80))
    assert max(by_second) == 79.0


def test_soak_holds_its_users_for_the_whole_run() -> None:
    scenario = build("soak", 500, 600)
    assert {u for _, (u, _) in ticks(scenario)} == {500}
    assert scenario.tick(599.9) == (500, scenario.tick(0.0)[1])  # type: ignore[index]
    assert scenario.tick(600.0) is None
    assert scenario.stages[0].spawn_rate >= 50  # all 500 within the 10 s ramp


def test_slow_dependency_makes_the_db_five_times_slower_half_way() -> None:
    scenario = build("slow_dependency", 300, 120)
    assert {u for _, (u, _) in ticks(scenario)} == {300}
    (event,) = scenario.chaos
    assert (event.at_s, event.dependency, event.latency_multiplier) == (60.0, "db", 5.0)
    assert scenario.phase(59.0) == "steady"
    assert scenario.phase(61.0) == "db slow"


def test_retry_storm_is_a_spike_of_impatient_users_only() -> None:
    storm, spike = build("retry_storm", 3_000, 90), build("spike", 3_000, 90)
    assert storm.population == "impatient"
    assert spike.population == "mixed"
    assert ticks(storm) == ticks(spike)


def test_every_scenario_has_defaults_and_a_shape() -> None:
    assert set(SCENARIOS) == {
        "spike",
        "step",
        "soak",
        "slow_dependency",
        "retry_storm",
        "square",
    }
    assert set(ALL_SCENARIOS) == {*SCENARIOS, "storm"}  # the storm needs wrk as well
    for name in ALL_SCENARIOS:
        users, duration = defaults(name)
        assert 1 <= users <= MAX_USERS
        assert len(ticks(build(name))) == int(duration)


@pytest.mark.parametrize(
    ("name", "users", "duration", "message"),
    [
        ("flood", None, None, "unknown scenario 'flood': choose from spike, step"),
        ("spike", 0, None, "users must be in [1, 10000], got 0"),
        ("spike", 10_001, None, "users must be in [1, 10000], got 10001"),
        ("step", None, 4.0, "duration must be in [5, 3600] s, got 4"),
        ("soak", None, float("nan"), "duration must be in [5, 3600] s, got nan"),
    ],
)
def test_a_scenario_that_cannot_run_names_the_problem(
    name: str, users: int | None, duration: float | None, message: str
) -> None:
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(name, users, duration)


# Locust monkeypatches the standard library with gevent as it is imported, so the
# shapes are driven in a child interpreter, on a fake clock, and report their ticks.
SHAPE_PROBE = """
import json, os, sys
from surgeguard_loadtest.scenarios import build
from surgeguard_loadtest.load.shapes import SHAPES
out = {}
for name, cls in SHAPES.items():
    shape = cls(build(name, 400, 40))
    now = [0.0]
    shape.get_run_time = lambda: now[0]
    ticks = []
    for t in range(41):
        now[0] = float(t)
        ticks.append(shape.tick())
    out[name] = ticks
env_shape = SHAPES["spike"]()  # sized by LOADTEST_* variables
out["from_env"] = [env_shape.scenario.users, env_shape.scenario.duration_s,
                   env_shape.scenario.stages[0].users]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shape_ticks() -> dict[str, list[object]]:
    env = {
        **os.environ,
        "LOADTEST_USERS": "120",
        "LOADTEST_DURATION_S": "30",
        "LOADTEST_BASELINE_USERS": "7",
    }
    done = subprocess.run(
        [sys.executable, "-c", SHAPE_PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    result: dict[str, list[object]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_each_locust_shape_ticks_through_its_scenario(
    name: str, shape_ticks: dict[str, list[object]]
) -> None:
    expected = [list(step) for _, step in ticks(build(name, 400, 40))]
    assert shape_ticks[name][:40] == expected
    assert shape_ticks[name][40] is None  # Locust stops the test


def test_there_is_a_shape_for_every_scenario(shape_ticks: dict[str, list[object]]) -> None:
    assert set(shape_ticks) - {"from_env"} == set(ALL_SCENARIOS)


def test_shapes_take_their_size_from_the_environment(
    shape_ticks: dict[str, list[object]],
) -> None:
    assert shape_ticks["from_env"] == [120, 30.0, 7]


def test_the_demo_accepts_the_load_generators_default_keys_at_critical() -> None:
    """The two apps keep their own lists (neither imports the other): they must agree."""
    from surgeguard_loadtest import keys
    from surgeguard_target_app.settings import DemoSettings

    demo = DemoSettings.load().client_key_ceilings
    assert demo is not None
    accepted = demo.ceilings
    for key in (keys.DEMO_CLIENT_KEY, *keys.LOAD_CLIENT_KEYS):
        assert accepted.get(key.encode()) == Priority.CRITICAL, key
    assert len(keys.LOAD_CLIENT_KEYS) == 16
