"""A budget a shared dependency declares (or a deployment sets): its validation, its
export in ``/metrics``, and the start rule (a replica without a share of its own runs
at 0 slots, its calls refused at once, until the controller grants it one) (issue 15)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from surgeguard import Dependency, Priority, Route, protect
from surgeguard.bulkhead import Bulkhead, BulkheadFull, DependencyMetrics
from surgeguard.controlplane import ControlState
from surgeguard.declaration import Declaration
from surgeguard.knobs import KnobError, Knobs
from surgeguard.protect import Protection
from surgeguard.settings import ReplicaSettings, SettingsError, parse_budgets

SHOP = Declaration.of(
    [Dependency("db", slots=16, min_slots=2, max_slots=40, budget=24), "search"],
)


def test_a_budget_is_declared_on_the_dependency_and_marks_its_knob() -> None:
    assert SHOP.budgets == {"db": 24}
    db, search = SHOP.knob_specs["bulkhead.db"], SHOP.knob_specs["bulkhead.search"]
    assert db.budgeted and not search.budgeted
    # One replica alone never starts above the whole budget.
    small = Declaration.of([Dependency("db", slots=16, budget=6)])
    assert small.knob_specs["bulkhead.db"].default == 6


@pytest.mark.parametrize(
    ("budget", "says"),
    [(0, "got 0"), (1, r"min_slots \(2\)"), (True, "got True"), ("24", "got '24'")],
)
def test_a_budget_below_one_replicas_minimum_is_refused(budget: object, says: str) -> None:
    with pytest.raises(ValueError, match=f"dependency 'db': budget must be an integer.*{says}"):
        Dependency("db", min_slots=2, budget=budget)  # type: ignore[arg-type]


def test_a_deployment_sets_or_overrides_budgets_by_name() -> None:
    assert parse_budgets(" db:24 , payments:8,") == {"db": 24, "payments": 8}
    assert SHOP.with_budgets({"search": 5, "db": 30}).budgets == {"db": 30, "search": 5}
    with pytest.raises(ValueError, match=r"unknown dependency 'payments' \(declared: db, search\)"):
        SHOP.with_budgets({"payments": 8})


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("db", "'db' is not dependency:total"),
        ("db:0", "db: the total must be an integer >= 1, got '0'"),
        ("db:-3", "got '-3'"),
        ("db:lots", "got 'lots'"),
        ("db:4,db:5", "'db' is given twice"),
        ("DB:4", "'DB:4' is not dependency:total"),
    ],
)
def test_a_bad_budgets_setting_is_one_line_naming_it(
    value: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGEGUARD_BUDGETS", value)
    with pytest.raises(SettingsError, match="invalid setting SURGEGUARD_BUDGETS=") as caught:
        ReplicaSettings.load()
    assert says in str(caught.value) and "\n" not in str(caught.value)


def _shop(
    budgets: str, registry: CollectorRegistry | None = None, redis_url: str | None = None
) -> Protection:
    return protect(
        FastAPI(),
        routes={"/stock/*": Route("stock", Priority.NORMAL)},
        dependencies=[Dependency("db", slots=16, min_slots=2, max_slots=40), "search"],
        settings=ReplicaSettings(budgets=budgets),
        replica="shop-1",
        registry=registry,
        redis_url=redis_url,
    )


def test_a_budget_for_a_dependency_the_app_does_not_declare_stops_start_up() -> None:
    with pytest.raises(
        SettingsError,
        match=r"invalid setting SURGEGUARD_BUDGETS='db:24,cache:4': "
        r"unknown dependency 'cache' \(declared: db, search\)",
    ):
        _shop("db:24,cache:4")


def test_a_replica_exports_its_budgets_and_nothing_for_the_others() -> None:
    registry = CollectorRegistry()
    assert _shop("db:24", registry).declaration.budgets == {"db": 24}
    budget = "surgeguard_dependency_budget"
    assert registry.get_sample_value(budget, {"dependency": "db"}) == 24
    assert registry.get_sample_value(budget, {"dependency": "search"}) is None
    plain = CollectorRegistry()
    _shop("", plain)
    assert plain.get_sample_value(budget, {"dependency": "db"}) is None


def test_without_a_share_of_its_own_a_replica_runs_a_budgeted_bulkhead_at_0_slots() -> None:
    initial = Knobs.build({}, SHOP.knob_specs)
    # Another replica has its share; a global value would be everyone's: not for a budget.
    state = ControlState(
        version=5,
        knobs={"bulkhead.db": 20, "bulkhead.search": 9},
        replicas={"shop-2": {"bulkhead.db": 12}},
    )
    knobs = state.knobs_for("shop-1", initial)
    # No slot it was not granted: not 20, nor the start-up 16, nor the minimum 2 (the
    # controller keeps nothing in reserve for a replica that starts).
    assert knobs.bulkhead("db") == 0
    assert knobs.bulkhead("search") == 9  # an unbudgeted knob follows the global value
    assert state.knobs_for("shop-2", initial).bulkhead("db") == 12  # its share
    # No document at all: 0 too (the controller has granted nothing yet).
    assert ControlState().knobs_for("shop-1", initial).bulkhead("db") == 0
    # An operator's pin is the operator's: it applies to every replica.
    pinned = ControlState(version=6, knobs={"bulkhead.db": 10}, pins=frozenset({"bulkhead.db"}))
    assert pinned.knobs_for("shop-1", initial).bulkhead("db") == 10


def test_0_slots_is_a_value_of_a_budgeted_knob_only() -> None:
    db, search = SHOP.knob_specs["bulkhead.db"], SHOP.knob_specs["bulkhead.search"]
    assert db.check(0) == 0 and db.check(2) == 2
    with pytest.raises(KnobError, match=r"bulkhead.db must be in \[2, 40\] calls, got 1"):
        db.check(1)  # a granted share is at least the minimum
    with pytest.raises(KnobError, match=r"bulkhead.search must be in \[1, 10000\] calls, got 0"):
        search.check(0)
    with pytest.raises(ValueError, match=r"bulkhead\.db limit must be >= 0, got -1"):
        Bulkhead("db", -1)


async def test_a_bulkhead_of_0_slots_refuses_every_call_at_once() -> None:
    registry = CollectorRegistry()
    bulkhead = Bulkhead("db", 0, max_wait_s=30.0, metrics=DependencyMetrics(registry))
    called = []

    async def query() -> str:
        called.append(1)
        return "row"

    # Refused at once (not after the 30 s wait: asyncio.timeout would cut a wait).
    async with asyncio.timeout(5):
        with pytest.raises(BulkheadFull, match="db: no slots: no share of its budget granted"):
            await bulkhead.call(query)
    assert called == [] and bulkhead.in_flight == 0
    rejections = "surgeguard_dependency_rejections_total"
    assert registry.get_sample_value(rejections, {"dependency": "db", "reason": "full"}) == 1
    bulkhead.set_limit(2)  # granted: calls go through
    assert await bulkhead.call(query) == "row"


def test_a_protected_replica_applies_the_start_rule_to_its_bulkhead() -> None:
    alone = _shop("db:24")
    assert alone.bulkheads["db"].limit == 16  # no control plane: nobody divides the budget
    # With a control plane (Redis down at start, say): no share yet, so no slots.
    shop = _shop("db:24", redis_url="redis://127.0.0.1:9")
    assert shop.bulkheads["db"].limit == 0 and shop.bulkheads["search"].limit == 16
    shop.apply_control(ControlState(version=1, knobs={"bulkhead.db": 16, "bulkhead.search": 3}))
    assert shop.bulkheads["db"].limit == 0 and shop.bulkheads["search"].limit == 3
    shop.apply_control(ControlState(version=2, replicas={"shop-1": {"bulkhead.db": 7}}))
    assert shop.bulkheads["db"].limit == 7
    # Without a budget, the global value applies as before.
    plain = _shop("")
    plain.apply_control(ControlState(version=1, knobs={"bulkhead.db": 16}))
    assert plain.bulkheads["db"].limit == 16
