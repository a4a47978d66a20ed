"""What an application declares about its world: the dependencies it calls (each
behind a bulkhead whose limit the controller tunes within the declared bounds) and
the degradation modes it implements.

Replicas export their declaration in ``/metrics`` (``surgeguard.metrics``:
``surgeguard_knob_minimum``/``_maximum``/``_default`` and ``surgeguard_mode_info``),
so the controller and the dashboard learn dependencies, knobs and modes from the
replicas instead of from a list of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType

from surgeguard.knobs import DOOR_KNOB_SPECS, KnobSpec, bulkhead_knob, bulkhead_spec
from surgeguard.modes import DOOR_MODES, ModeSpec, parse_modes

DEPENDENCY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Dependency:
    """A shared dependency the app calls, behind a bulkhead of ``slots`` calls in
    flight at start; the controller tunes it within [``min_slots``, ``max_slots``].

    ``budget``: the calls in flight the dependency honours across ALL replicas (for
    Postgres: ``max_connections`` less a reserve); None: no shared limit. A budgeted
    bulkhead is a share the controller hands out: the sum of every replica's stays
    within the budget, and a replica without a share of its own runs at 0 slots until
    the controller grants it one (``ControlState.knobs_for``); once granted, a share is
    at least ``min_slots``."""

    name: str
    slots: int = 16
    min_slots: int = 1
    max_slots: int = 10_000
    description: str = ""
    budget: int | None = None

    def __post_init__(self) -> None:
        if not DEPENDENCY_NAME.match(self.name):
            raise ValueError(
                f"dependency name {self.name!r} must be 1-40 of a-z, 0-9 and _, "
                "starting with a letter (it becomes the knob bulkhead.<name>)"
            )
        bulkhead_spec(self.name, self.slots, minimum=self.min_slots, maximum=self.max_slots)
        budget = self.budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < self.min_slots
        ):
            raise ValueError(
                f"dependency {self.name!r}: budget must be an integer >= min_slots "
                f"({self.min_slots}) calls across all replicas, got {budget!r}"
            )

    @property
    def knob(self) -> str:
        return bulkhead_knob(self.name)

    @property
    def spec(self) -> KnobSpec:
        # One replica alone never starts above the whole budget.
        slots = self.slots if self.budget is None else min(self.slots, self.budget)
        return bulkhead_spec(
            self.name,
            slots,
            minimum=self.min_slots,
            maximum=self.max_slots,
            description=self.description,
            budgeted=self.budget is not None,
        )


@dataclass(frozen=True)
class Declaration:
    """One application's dependencies and its own modes (the door's are added)."""

    dependencies: tuple[Dependency, ...] = ()
    modes: tuple[ModeSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [d.name for d in self.dependencies]
        _no_repeats(names, "dependency")
        door = {m.name for m in DOOR_MODES}
        for mode in self.modes:
            if mode.name in door:
                raise ValueError(f"mode {mode.name!r} is the library's own; pick another name")
            if mode.door:
                raise ValueError(f"mode {mode.name!r}: only the library's modes act at the door")
        _no_repeats([m.name for m in self.modes], "mode")

    @classmethod
    def of(
        cls,
        dependencies: Iterable[Dependency | str] = (),
        modes: Iterable[ModeSpec] = (),
    ) -> Declaration:
        """A declaration from dependencies (a bare name: default bounds) and modes."""
        deps = tuple(d if isinstance(d, Dependency) else Dependency(d) for d in dependencies)
        return cls(deps, tuple(modes))

    @cached_property
    def knob_specs(self) -> Mapping[str, KnobSpec]:
        """The door's knobs, then one ``bulkhead.<name>`` per dependency."""
        specs = dict(DOOR_KNOB_SPECS)
        specs.update({d.knob: d.spec for d in self.dependencies})
        return MappingProxyType(specs)

    @cached_property
    def all_modes(self) -> Mapping[str, ModeSpec]:
        """The door's modes, then the app's, by name."""
        return MappingProxyType({m.name: m for m in (*DOOR_MODES, *self.modes)})

    @property
    def dependency_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dependencies)

    @property
    def budgets(self) -> Mapping[str, int]:
        """The budgeted dependencies' totals, calls across all replicas."""
        return MappingProxyType(
            {d.name: d.budget for d in self.dependencies if d.budget is not None}
        )

    def with_budgets(self, budgets: Mapping[str, int]) -> Declaration:
        """This declaration with ``budgets`` (dependency -> total) set or overriding
        the declared ones (a deployment's ``SURGEGUARD_BUDGETS``). Raises
        ``ValueError`` naming a dependency it does not declare or a bad total."""
        unknown = sorted(set(budgets) - set(self.dependency_names))
        if unknown:
            declared = ", ".join(self.dependency_names) or "none"
            raise ValueError(f"unknown dependency {unknown[0]!r} (declared: {declared})")
        deps = tuple(
            replace(d, budget=budgets[d.name]) if d.name in budgets else d
            for d in self.dependencies
        )
        return replace(self, dependencies=deps)

    def parse_modes(self, names: Iterable[str]) -> frozenset[str]:
        return parse_modes(names, self.all_modes)


def _no_repeats(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} is declared twice")
        seen.add(name)
