"""The budgets in the control loop (``surgeguard_controller.budgeting``), pure: the
limit algorithm's decisions for a budgeted bulkhead held to each replica's share, the
moves the budget alone makes and their reasons, pins, the autopilot, replicas that do
not obey, global scope, and what the controller reports and exports (issue 15)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client import CollectorRegistry

from surgeguard.controlplane import ControlState
from surgeguard.declaration import Declaration, Dependency
from surgeguard_controller.budgeting import Budgets
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.decide import Decision
from surgeguard_controller.metrics import ControllerMetrics
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import Signals
from tests.controller.test_catalogue import scrape_of
from tests.controller.test_decide import dep, signals

KNOB = "bulkhead.db"
SHOP = Declaration.of([Dependency("db", slots=8, max_slots=40, budget=12), "cache"])


@dataclass
class View:
    replica: str
    signals: Signals
    knobs: dict[str, int] = field(default_factory=dict)
    enforced_knobs: dict[str, int] = field(default_factory=dict)
    obeying: bool = True


def _config() -> ControllerConfig:
    config = ControllerConfig()
    config.learn(Catalogue.from_scrapes([scrape_of(SHOP)]))
    return config


def _view(
    replica: str, limit: int, in_flight: float, waiting: float = 0.0, now_in_flight: float = 0.0
) -> tuple[View, Scrape]:
    s = replace(
        signals(replica=replica),
        dependencies={"db": dep(limit=limit, mean_in_flight=in_flight, in_flight=in_flight)},
    )
    view = View(replica, s, {KNOB: limit}, {KNOB: limit})
    db = frozenset({("dependency", "db")})
    now = Scrape(
        1.0,
        {
            ("surgeguard_dependency_waiting", db): waiting,
            ("surgeguard_dependency_inflight", db): now_in_flight,
        },
    )
    return view, now


def _aimd(replica: str, old: int, new: int, action: str = "grow") -> Decision:
    return Decision(replica, KNOB, old, new, action, f"db p99 fine: {KNOB} {old} -> {new}", True)


def test_the_catalogue_learns_the_smallest_budget_any_replica_declares() -> None:
    other = Declaration.of([Dependency("db", slots=8, max_slots=40, budget=10), "cache"])
    catalogue = Catalogue.from_scrapes([scrape_of(SHOP), None, scrape_of(other)])
    assert dict(catalogue.budgets) == {"db": 10}
    assert dict(Catalogue.from_scrapes([scrape_of(Declaration.of(["db"]))]).budgets) == {}


def test_a_grow_is_capped_at_the_share_and_an_idle_replicas_share_is_cut() -> None:
    (a, a_now), (b, b_now) = _view("a", 4, 4.0, waiting=6.0), _view("b", 6, 0.0)
    state = ControlState(version=3, replicas={"a": {KNOB: 4}, "b": {KNOB: 6}})
    registry = CollectorRegistry()
    budgets = Budgets(ControllerMetrics(registry))
    decided = [_aimd("a", 4, 12), Decision("b", KNOB, 6, 6, "hold", "b holds", False)]
    out = {
        d.replica: d
        for d in budgets.apply(
            decided, [(a, a_now, a_now), (b, b_now, b_now)], [a, b], state, _config()
        )
    }
    # b is idle: cut to the minimum at once; a's grow waits for b's slots (b still
    # enforces 6): none of the 12 is kept back, so a gets 12 - 6 - 4 = 2.
    assert (out["b"].new, out["b"].action, out["b"].applied) == (1, "cut", True)
    assert out["b"].reason == "budget db 12: share 6 -> 1, demand 0.0 of 10.0 in all"
    assert (out["a"].old, out["a"].new) == (4, 6)
    assert out["a"].reason.startswith(
        f"db p99 fine: {KNOB} 4 -> 12; capped: budget db 12: share 4 -> 6"
    )
    assert out["a"].inputs["budget"] == 12 and out["a"].inputs["demand"] == 10.0
    report = budgets.json()["db"]
    assert report["total"] == 12 and report["shares"] == {"a": 6, "b": 1}
    assert report["demand"] == {"a": 10.0, "b": 0.0}
    assert (
        registry.get_sample_value("surgeguard_controller_budget_total", {"dependency": "db"}) == 12
    )
    share = "surgeguard_controller_budget_share"
    assert registry.get_sample_value(share, {"dependency": "db", "replica": "a"}) == 6
    # b applied its cut: a grows into the slots (AIMD's 12 is more than its share).
    state = ControlState(version=4, replicas={"a": {KNOB: 5}, "b": {KNOB: 1}})
    (a, a_now), (b, b_now) = _view("a", 5, 5.0, waiting=5.0), _view("b", 1, 0.0)
    out = {
        d.replica: d
        for d in budgets.apply(
            [_aimd("a", 5, 12)], [(a, a_now, a_now), (b, b_now, b_now)], [a, b], state, _config()
        )
    }
    assert out["a"].new == 11 and "b" not in out  # b stays at the minimum: nothing to say
    # b leaves (dropped from the view and the document): its series go.
    budgets.apply(
        [], [(a, a_now, a_now)], [a], ControlState(version=5, replicas={"a": {KNOB: 10}}), _config()
    )
    assert registry.get_sample_value(share, {"dependency": "db", "replica": "b"}) is None


def test_a_move_within_the_share_is_the_algorithms_own_and_a_replica_not_read_holds() -> None:
    (a, a_now), (b, _) = _view("a", 3, 3.0, waiting=2.0), _view("b", 4, 4.0)
    state = ControlState(version=3, replicas={"a": {KNOB: 3}, "b": {KNOB: 4}})
    grow = _aimd("a", 3, 5)
    out = Budgets().apply([grow], [(a, a_now, a_now)], [a, b], state, _config())
    assert out == [grow]  # within a's share: AIMD's decision, unchanged; b not read: nothing
    # A replica in the document the loop has not read yet holds its share too.
    state = ControlState(version=3, replicas={"a": {KNOB: 3}, "ghost": {KNOB: 9}})
    budgets = Budgets()
    out = budgets.apply([_aimd("a", 3, 9)], [(a, a_now, a_now)], [a], state, _config())
    # 12 - 9 held by ghost = 3: a stays, and says why.
    assert (out[0].new, out[0].action, out[0].applied) == (3, "hold", False)
    assert "held at its share: budget db 12" in out[0].reason
    assert budgets.json()["db"]["shares"] == {"a": 3, "ghost": 9}


def test_pins_win_the_autopilot_off_says_and_a_disobeying_replica_is_not_applied() -> None:
    (a, a_now), (b, b_now) = _view("a", 10, 10.0, waiting=5.0), _view("b", 10, 0.0)
    windows = [(a, a_now, a_now), (b, b_now, b_now)]
    over = ControlState(version=3, replicas={"a": {KNOB: 10}, "b": {KNOB: 10}})
    pinned = replace(over, knobs={KNOB: 10}, pins=frozenset({KNOB}))
    budgets = Budgets()
    assert budgets.apply([], windows, [a, b], pinned, _config()) == []
    assert budgets.json()["db"]["reason"] == (
        "budget db 12: bulkhead.db is pinned at 10 by an operator "
        "(2 replicas, 20 in all): not divided"
    )
    paused = budgets.apply([], windows, [a, b], replace(over, autopilot=False), _config())
    cut = {d.replica: d for d in paused}["b"]
    assert not cut.applied and cut.reason.endswith("(autopilot paused: would have done this)")
    b.obeying = False
    out = {d.replica: d for d in budgets.apply([], windows, [a, b], over, _config())}
    assert not out["b"].applied and "does not apply the control plane" in out["b"].reason


def test_in_global_scope_the_one_value_is_held_per_replica() -> None:
    (a, a_now), (b, b_now) = _view("a", 2, 2.0, waiting=8.0), _view("b", 2, 2.0, waiting=8.0)
    state = ControlState(version=3, replicas={"a": {KNOB: 2}, "b": {KNOB: 2}})
    everyone = _aimd("all", 2, 20)
    out = Budgets().apply(
        [everyone], [(a, a_now, a_now), (b, b_now, b_now)], [a, b], state, _config()
    )
    assert {d.replica: d.new for d in out} == {"a": 6, "b": 6}  # 12 by equal demand, no "all"


def test_a_budget_too_small_for_the_minimums_is_a_warning_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tight = Declaration.of([Dependency("db", slots=5, min_slots=5, max_slots=40, budget=8)])
    config = ControllerConfig()
    config.learn(Catalogue.from_scrapes([scrape_of(tight)]))
    (a, a_now), (b, b_now) = _view("a", 5, 5.0), _view("b", 5, 5.0)
    windows = [(a, a_now, a_now), (b, b_now, b_now)]
    state = ControlState(version=3, replicas={"a": {KNOB: 5}, "b": {KNOB: 5}})
    budgets = Budgets()
    with caplog.at_level(logging.INFO, logger="controller.budgets"):
        for _ in range(3):
            assert budgets.apply([], windows, [a, b], state, config) == []  # minimums stay
        budgets.apply([], windows[:1], [a], replace(state, replicas={"a": {KNOB: 5}}), config)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            "budget db 8 < 2 replicas x minimum 5: each gets the minimum, 10 in all, "
            "2 over the budget",
        ),
        ("INFO", "budget db 8 covers every minimum again"),
    ]


def test_calls_still_in_flight_above_a_cut_limit_hold_their_slots() -> None:
    # a applied its cut to 2, but 8 of its calls (pooled connections) are still running.
    (a, a_now), (b, b_now) = _view("a", 2, 2.0, now_in_flight=8.0), _view("b", 1, 1.0, 9.0)
    state = ControlState(version=3, replicas={"a": {KNOB: 2}, "b": {KNOB: 1}})
    windows = [(a, a_now, a_now), (b, b_now, b_now)]
    out = Budgets().apply([_aimd("b", 1, 12)], windows, [a, b], state, _config())
    # 12 - 8 held by a = 4 for b (not 12 - 2 = 10).
    assert [(d.replica, d.new) for d in out] == [("b", 4)]


def test_calls_a_full_bulkhead_refused_count_in_the_demand_by_littles_law() -> None:
    # a and b both run 4 calls at once (100 ms each, 40/s): equal on what they hold,
    # but a's bulkhead refuses 60 calls/s more (6 timed out too, already in its busy
    # time): 54 full x 0.1 s = 5.4 slots it would have needed.
    (a, a_now), (b, b_now) = _view("a", 4, 4.0), _view("b", 4, 4.0)
    a.signals = replace(
        a.signals,
        dependencies={
            "db": dep(
                limit=4,
                mean_in_flight=4.0,
                in_flight=4.0,
                calls_per_s=40.0,
                rejected_per_s=60.0,
                timeout_rate=0.15,
            )
        },
    )
    b.signals = replace(
        b.signals,
        dependencies={"db": dep(limit=4, mean_in_flight=4.0, in_flight=4.0, calls_per_s=40.0)},
    )
    state = ControlState(version=3, replicas={"a": {KNOB: 4}, "b": {KNOB: 4}})
    budgets = Budgets()
    budgets.apply([], [(a, a_now, a_now), (b, b_now, b_now)], [a, b], state, _config())
    demand = budgets.json()["db"]["demand"]
    assert demand == {"a": 9.4, "b": 4.0}


def test_a_joiner_at_0_slots_is_granted_its_minimum_out_of_free_slots_only() -> None:
    # c just started: no share in the document, it enforces 0 and refuses its calls
    # (50/s; it made none, so the time a call takes is the fleet's: 0.1 s).
    (a, a_now), (b, b_now) = _view("a", 6, 6.0, waiting=4.0), _view("b", 6, 6.0, waiting=4.0)
    (c, c_now) = _view("c", 0, 0.0)
    for view in (a, b):
        view.signals = replace(
            view.signals,
            dependencies={"db": dep(limit=6, mean_in_flight=6.0, in_flight=6.0, calls_per_s=60.0)},
        )
    c.signals = replace(
        c.signals,
        dependencies={
            "db": dep(
                limit=0, mean_in_flight=0.0, in_flight=0.0, calls_per_s=0.0, rejected_per_s=50.0
            )
        },
    )
    windows = [(a, a_now, a_now), (b, b_now, b_now), (c, c_now, c_now)]
    state = ControlState(version=3, replicas={"a": {KNOB: 6}, "b": {KNOB: 6}})
    budgets = Budgets()
    out = {d.replica: d for d in budgets.apply([], windows, [a, b, c], state, _config())}
    # Nothing is free (a and b enforce 6 + 6 = 12): they are cut, c gets nothing yet.
    assert out["a"].new < 6 and out["b"].new < 6 and "c" not in out
    report = budgets.json()["db"]
    assert report["shares"]["c"] == 0 and report["demand"]["c"] == 5.0
    assert "c wait for slots others still hold" in report["reason"]
    # They applied their cuts: c is granted slots (the knob's minimum, 1, or more).
    cut = {r: out[r].new for r in ("a", "b")}
    for view, r in ((a, "a"), (b, "b")):
        view.knobs = view.enforced_knobs = {KNOB: cut[r]}
    state = ControlState(version=4, replicas={r: {KNOB: v} for r, v in cut.items()})
    out = {d.replica: d for d in budgets.apply([], windows, [a, b, c], state, _config())}
    assert out["c"].old == 0 and out["c"].new == 12 - sum(cut.values())
    assert out["c"].reason.startswith("budget db 12: share none -> ")
