"""The controller learns knobs, bounds and modes from the replicas' own metrics (pure,
on scrapes of real exposition text), and decides for dependencies it was never told of."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from surgeguard.control_metrics import export_control
from surgeguard.declaration import Declaration, Dependency
from surgeguard.knobs import Knobs
from surgeguard.modes import ModeSpec
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.decide import Decider, current_knobs
from surgeguard_controller.sensing.scrape import Scrape
from tests.controller.test_decide import by_knob, dep, signals
from tests.support.clock import FakeClock


def scrape_of(declaration: Declaration, at: float = 0.0) -> Scrape:
    """What a replica declaring ``declaration`` exports, read as the controller reads it."""
    registry = CollectorRegistry()
    knobs = Knobs.build({}, declaration.knob_specs)
    export_control(
        registry,
        replica="r",
        staleness_s=lambda: 0.0,
        applied_version=lambda: -1,
        modes_on=frozenset,
        knobs=lambda: knobs,
        declaration=declaration,
    )
    return Scrape.from_text(generate_latest(registry).decode(), at)


OLD = Declaration.of(
    [Dependency("postgres", slots=8, max_slots=64), Dependency("search", slots=4)],
    [ModeSpec("search_off", "Answer without search.", auto_degrade=True)],
)
NEW = Declaration.of(
    [Dependency("postgres", slots=8, min_slots=2, max_slots=32), "ledger"],
    [
        ModeSpec("ledger_async", "Write the ledger later."),
        ModeSpec("search_off", "Answer without search.", auto_degrade=True),
    ],
)


def test_knobs_and_modes_come_from_what_replicas_declare() -> None:
    catalogue = Catalogue.from_scrapes([scrape_of(OLD)])
    assert catalogue.dependencies == ("postgres", "search")
    pg = catalogue.knob_specs["bulkhead.postgres"]
    assert (pg.minimum, pg.default, pg.maximum, pg.unit) == (1, 8, 64, "calls")
    assert list(catalogue.modes) == ["shed_sheddable", "read_only", "search_off"]
    assert catalogue.ladder == ("shed_sheddable", "search_off")


def test_replicas_that_differ_get_the_narrowest_bounds_and_every_mode() -> None:
    """A rolling deploy: what the controller writes must fit every replica."""
    catalogue = Catalogue.from_scrapes([scrape_of(OLD), None, scrape_of(NEW)])
    pg = catalogue.knob_specs["bulkhead.postgres"]
    assert (pg.minimum, pg.maximum) == (2, 32)
    assert set(catalogue.dependencies) == {"postgres", "search", "ledger"}
    assert set(catalogue.modes) == {
        "shed_sheddable",
        "read_only",
        "search_off",
        "ledger_async",
    }


def test_before_any_replica_is_read_only_the_door_is_known() -> None:
    empty = Catalogue.from_scrapes([None])
    assert list(empty.knob_specs) == ["concurrency_limit", "queue_limit", "queue_timeout_ms"]
    assert empty.dependencies == () and empty.ladder == ("shed_sheddable",)


def test_bounds_are_the_declared_ones_narrowed_by_the_operators() -> None:
    config = ControllerConfig(bounds={"bulkhead.postgres": (4, 100), "bulkhead.ledger": (3, 9)})
    config.learn(Catalogue.from_scrapes([scrape_of(NEW)]))
    assert config.bounds_of("bulkhead.postgres") == (4, 32)
    assert config.bounds_of("bulkhead.ledger") == (3, 9)
    assert config.bounds_of("bulkhead.unseen") == (1, 10_000)  # never declared: widest
    assert config.bounds_of("concurrency_limit") == (1, 10_000)


def test_a_dependency_the_controller_never_heard_of_is_tuned(fake_clock: FakeClock) -> None:
    """Regression: a replica with a bulkhead named ``slowdep`` made every tick fail with
    ``KeyError: 'bulkhead.slowdep'``; now the dependency is cut like any other."""
    config = ControllerConfig()
    config.learn(Catalogue.from_scrapes([scrape_of(Declaration.of(["slowdep"]))]))
    decider = Decider(config)
    healthy = signals(dependencies={"slowdep": dep("slowdep", p50=0.01, p99=0.02)})
    decider.decide(healthy, current_knobs(healthy), now=fake_clock())
    fake_clock.advance(1)
    slow = signals(dependencies={"slowdep": dep("slowdep", p50=0.08, p99=0.2, util=1.0)})
    d = by_knob(decider.decide(slow, current_knobs(slow), now=fake_clock()))["bulkhead.slowdep"]
    assert d.action == "cut"  # type: ignore[attr-defined]
    assert d.reason.startswith("slowdep p99 200 ms")  # type: ignore[attr-defined]


def test_a_replica_exporting_nonsense_declares_nothing() -> None:
    text = (
        'surgeguard_knob_minimum{knob="bulkhead.x"} 9\n'
        'surgeguard_knob_maximum{knob="bulkhead.x"} 3\n'
        'surgeguard_mode_info{mode="Bad Name",description="x",door="false",'
        'auto_degrade="true",order="2"} 1\n'
    )
    catalogue = Catalogue.from_scrapes([Scrape.from_text(text, 0.0)])
    assert "bulkhead.x" not in catalogue.knob_specs
    assert "Bad Name" not in catalogue.modes
