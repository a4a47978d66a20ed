"""What an app may declare, and what the library makes of it (pure)."""

from __future__ import annotations

import pytest

from surgeguard.controlplane import ControlDocumentError, ControlState
from surgeguard.declaration import Declaration, Dependency
from surgeguard.knobs import KnobError, Knobs
from surgeguard.modes import ModeSpec

SHOP = Declaration.of(
    [Dependency("inventory_db", slots=6, min_slots=2, max_slots=40), "search"],
    [ModeSpec("reservations_paused", "New reservations get 503; stock reads go on.")],
)


def test_each_dependency_becomes_a_bulkhead_knob_within_its_declared_bounds() -> None:
    specs = SHOP.knob_specs
    assert list(specs) == [
        "concurrency_limit",
        "queue_limit",
        "queue_timeout_ms",
        "bulkhead.inventory_db",
        "bulkhead.search",
    ]
    db = specs["bulkhead.inventory_db"]
    assert (db.minimum, db.default, db.maximum, db.unit) == (2, 6, 40, "calls")
    assert (specs["bulkhead.search"].default, specs["bulkhead.search"].maximum) == (16, 10_000)
    knobs = Knobs.build({"bulkhead.inventory_db": 40}, SHOP.knob_specs)
    assert knobs.bulkhead("inventory_db") == 40 and knobs.bulkhead("search") == 16
    with pytest.raises(KnobError, match=r"bulkhead.inventory_db must be in \[2, 40\] calls"):
        knobs.with_changes({"bulkhead.inventory_db": 41})
    with pytest.raises(KnobError, match=r"unknown knob 'bulkhead\.db': allowed are .*inventory_db"):
        knobs.with_changes({"bulkhead.db": 4})


def test_the_door_modes_come_first_and_the_apps_after() -> None:
    assert list(SHOP.all_modes) == ["shed_sheddable", "read_only", "reservations_paused"]
    assert SHOP.all_modes["shed_sheddable"].door and not SHOP.all_modes["reservations_paused"].door
    assert SHOP.parse_modes(["reservations_paused"]) == {"reservations_paused"}
    with pytest.raises(ValueError, match="unknown mode 'turbo': allowed are shed_sheddable, "):
        SHOP.parse_modes(["turbo"])


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (lambda: Dependency("Inventory DB"), "dependency name 'Inventory DB' must be"),
        (lambda: Dependency("db", slots=0), "1 <= min <= slots <= max"),
        (lambda: Dependency("db", slots=50, max_slots=40), "got min 1, slots 50, max 40"),
        (lambda: Declaration.of(["db", "db"]), "dependency 'db' is declared twice"),
        (lambda: ModeSpec("fast", " "), "needs a description"),
        (lambda: ModeSpec("Fast!", "x"), "mode name 'Fast!' must be"),
        (
            lambda: Declaration.of(modes=[ModeSpec("read_only", "mine")]),
            "'read_only' is the library's own",
        ),
        (
            lambda: Declaration.of(modes=[ModeSpec("a", "x"), ModeSpec("a", "y")]),
            "mode 'a' is declared twice",
        ),
    ],
)
def test_a_declaration_that_cannot_work_says_why_at_start(build: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        build()  # type: ignore[operator]


def test_a_replica_leaves_out_what_it_does_not_declare_and_keeps_the_rest() -> None:
    initial = Knobs.build({}, SHOP.knob_specs)
    state = ControlState(
        version=3,
        knobs={"queue_limit": 9, "bulkhead.payments": 5},
        replicas={"r1": {"bulkhead.inventory_db": 12}},
        modes=frozenset({"reservations_paused", "serve_stale"}),
    )
    knobs = state.knobs_for("r1", initial)
    assert knobs["queue_limit"] == 9 and knobs.bulkhead("inventory_db") == 12
    assert "bulkhead.payments" not in knobs
    assert state.modes_known(SHOP.all_modes) == {"reservations_paused"}
    # ...but a value outside what it declares refuses the document whole.
    with pytest.raises(KnobError, match=r"\[2, 40\]"):
        ControlState(version=4, knobs={"bulkhead.inventory_db": 1}).knobs_for("r1", initial)


def test_the_writers_check_names_what_no_replica_declares() -> None:
    state = ControlState(knobs={"bulkhead.inventry_db": 3})
    with pytest.raises(ControlDocumentError, match=r"unknown knob 'bulkhead\.inventry_db'"):
        state.check(SHOP.knob_specs, SHOP.all_modes)
    with pytest.raises(ControlDocumentError, match="unknown mode 'serve_stale'"):
        ControlState(modes=frozenset({"serve_stale"})).check(SHOP.knob_specs, SHOP.all_modes)
    ControlState(knobs={"bulkhead.search": 3}, pins=frozenset({"queue_limit"})).check(
        SHOP.knob_specs, SHOP.all_modes
    )  # no error: everything in it is declared


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ('{"knobs": {"concurrency_limit": 0}}', "concurrency_limit must be in [1, 10000]"),
        ('{"knobs": {"bulkhead.db": 0}}', "bulkhead.db must be in [1, 10000]"),
        ('{"knobs": {"bulkhead.Db": 3}}', "unknown knob 'bulkhead.Db'"),
        ('{"knobs": {"speed": 3}}', "unknown knob 'speed'"),
        ('{"modes": ["read only"]}', "'read only' is not a mode name"),
        ('{"pins": "queue_limit"}', "pins must be a list of names"),
    ],
)
def test_a_document_no_replica_could_take_is_refused_on_reading(document: str, says: str) -> None:
    with pytest.raises(ControlDocumentError) as caught:
        ControlState.from_json(document)
    assert says in str(caught.value)
