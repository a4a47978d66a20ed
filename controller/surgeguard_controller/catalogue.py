"""What the replicas declare, learned from their metrics: every knob with its bounds
and unit, every degradation mode with what it does, the dependencies.

The controller keeps no list of its own: a replica that declares a bulkhead named
``postgres`` or a mode named ``search_off`` is tuned and offered as it says. Where
replicas differ (a rolling deploy) a knob's bounds are the narrowest that every
replica declaring it accepts, so a value the controller writes fits all of them; a
shared dependency's budget is the smallest any replica declares
(``surgeguard_dependency_budget``). Before any replica has been read, only the door's
knobs and modes are known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from surgeguard.controlplane import ControlState
from surgeguard.knobs import DOOR_KNOB_SPECS, KnobSpec, dependency_of
from surgeguard.metric_names import (
    DEPENDENCY_BUDGET,
    KNOB_DEFAULT,
    KNOB_INFO,
    KNOB_MAXIMUM,
    KNOB_MINIMUM,
    MODE_INFO,
)
from surgeguard.modes import DOOR_MODES, ModeSpec
from surgeguard_controller.sensing.scrape import Scrape


@dataclass(frozen=True)
class Catalogue:
    knob_specs: Mapping[str, KnobSpec] = field(default_factory=lambda: DOOR_KNOB_SPECS)
    modes: Mapping[str, ModeSpec] = field(
        default_factory=lambda: MappingProxyType({m.name: m for m in DOOR_MODES})
    )
    # dependency -> calls in flight it honours across all replicas (the smallest declared)
    budgets: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(d for d in map(dependency_of, self.knob_specs) if d is not None)

    @property
    def ladder(self) -> tuple[str, ...]:
        """Modes the auto-degrade ladder may switch on, in the order it tries them."""
        return tuple(m.name for m in self.modes.values() if m.auto_degrade)

    def check(self, state: ControlState) -> None:
        """A document the controller is about to store, against what replicas declare
        (raises ``ControlDocumentError`` naming the first problem)."""
        state.check(self.knob_specs, self.modes)

    @classmethod
    def from_scrapes(cls, scrapes: Iterable[Scrape | None]) -> Catalogue:
        specs: dict[str, KnobSpec] = dict(DOOR_KNOB_SPECS)
        modes: dict[str, ModeSpec] = {m.name: m for m in DOOR_MODES}
        seen: set[str] = set()
        budgets: dict[str, int] = {}
        for scrape in scrapes:
            if scrape is None:
                continue
            for dependency, total in scrape.by_label(DEPENDENCY_BUDGET, "dependency").items():
                if total >= 1:  # a replica exporting nonsense declares nothing
                    budgets[dependency] = min(int(total), budgets.get(dependency, int(total)))
            for knob, spec in _knobs_of(scrape).items():
                known = specs.get(knob) if knob in seen else None
                specs[knob] = spec if known is None else _narrowest(known, spec)
                seen.add(knob)
            for mode in _modes_of(scrape):
                modes.setdefault(mode.name, mode)
        # The door's knobs first, then the declared ones by name (replicas' scrapes
        # and Prometheus answers come in no order worth keeping).
        ordered = {k: specs[k] for k in DOOR_KNOB_SPECS} | {
            k: specs[k] for k in sorted(specs) if k not in DOOR_KNOB_SPECS
        }
        return cls(MappingProxyType(ordered), MappingProxyType(modes), MappingProxyType(budgets))


def _knobs_of(scrape: Scrape) -> dict[str, KnobSpec]:
    minimum = scrape.by_label(KNOB_MINIMUM, "knob")
    maximum = scrape.by_label(KNOB_MAXIMUM, "knob")
    default = scrape.by_label(KNOB_DEFAULT, "knob")
    about: dict[str, tuple[str, str]] = {}
    for (name, labels), _ in scrape.samples.items():
        if name == KNOB_INFO:
            values = dict(labels)
            about[values.get("knob", "")] = (values.get("unit", ""), values.get("description", ""))
    specs = {}
    for knob in minimum.keys() & maximum.keys():
        low, high = int(minimum[knob]), int(maximum[knob])
        if not 0 <= low <= high:
            continue  # a replica exporting nonsense declares nothing
        start = min(max(int(default.get(knob, low)), low), high)
        unit, description = about.get(knob, ("", ""))
        specs[knob] = KnobSpec(knob, low, high, start, unit, description or knob)
    return specs


def _narrowest(a: KnobSpec, b: KnobSpec) -> KnobSpec:
    low, high = max(a.minimum, b.minimum), min(a.maximum, b.maximum)
    if low > high:  # replicas that disagree entirely: keep the first one's
        return a
    return KnobSpec(a.name, low, high, min(max(a.default, low), high), a.unit, a.description)


def _modes_of(scrape: Scrape) -> list[ModeSpec]:
    modes: list[tuple[int, ModeSpec]] = []
    for (name, labels), _ in scrape.samples.items():
        if name != MODE_INFO:
            continue
        values = dict(labels)
        try:
            order = int(values.get("order", "1000"))
            modes.append(
                (
                    order,
                    ModeSpec(
                        values.get("mode", ""),
                        values.get("description", ""),
                        auto_degrade=values.get("auto_degrade") == "true",
                        door=values.get("door") == "true",
                    ),
                )
            )
        except ValueError:
            continue  # not a mode name: ignored, as a replica would
    return [m for _, m in sorted(modes, key=lambda om: (om[0], om[1].name))]
