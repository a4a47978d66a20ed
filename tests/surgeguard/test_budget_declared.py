"""A budget a shared dependency declares (or a deployment sets): its validation, its
export in ``/metrics``, and the start rule (a replica without a share of its own runs
at the knob's minimum, never above what the controller could grant it) (issue 15)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from surgeguard import Dependency, Priority, Route, protect
from surgeguard.controlplane import ControlState
from surgeguard.declaration import Declaration
from surgeguard.knobs import Knobs
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


def test_without_a_share_of_its_own_a_replica_runs_a_budgeted_bulkhead_at_the_minimum() -> None:
    initial = Knobs.build({}, SHOP.knob_specs)
    # Another replica has its share; a global value would be everyone's: not for a budget.
    state = ControlState(
        version=5,
        knobs={"bulkhead.db": 20, "bulkhead.search": 9},
        replicas={"shop-2": {"bulkhead.db": 12}},
    )
    knobs = state.knobs_for("shop-1", initial)
    assert knobs.bulkhead("db") == 2  # the minimum, not 20 nor the start-up 16
    assert knobs.bulkhead("search") == 9  # an unbudgeted knob follows the global value
    assert state.knobs_for("shop-2", initial).bulkhead("db") == 12  # its share
    # No document at all: the minimum too (the controller has granted nothing yet).
    assert ControlState().knobs_for("shop-1", initial).bulkhead("db") == 2
    # An operator's pin is the operator's: it applies to every replica.
    pinned = ControlState(version=6, knobs={"bulkhead.db": 10}, pins=frozenset({"bulkhead.db"}))
    assert pinned.knobs_for("shop-1", initial).bulkhead("db") == 10


def test_a_protected_replica_applies_the_start_rule_to_its_bulkhead() -> None:
    alone = _shop("db:24")
    assert alone.bulkheads["db"].limit == 16  # no control plane: nobody divides the budget
    # With a control plane (Redis down at start, say): no share yet, so the minimum.
    shop = _shop("db:24", redis_url="redis://127.0.0.1:9")
    assert shop.bulkheads["db"].limit == 2 and shop.bulkheads["search"].limit == 16
    shop.apply_control(ControlState(version=1, knobs={"bulkhead.db": 16, "bulkhead.search": 3}))
    assert shop.bulkheads["db"].limit == 2 and shop.bulkheads["search"].limit == 3
    shop.apply_control(ControlState(version=2, replicas={"shop-1": {"bulkhead.db": 7}}))
    assert shop.bulkheads["db"].limit == 7
    # Without a budget, the global value applies as before.
    plain = _shop("")
    plain.apply_control(ControlState(version=1, knobs={"bulkhead.db": 16}))
    assert plain.bulkheads["db"].limit == 16
