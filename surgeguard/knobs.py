"""The knobs: every number the control plane may tune, with its bounds.

The door's three knobs (``DOOR_KNOB_SPECS``) exist in every replica. Each dependency
an application declares (``surgeguard.declaration``) adds one more,
``bulkhead.<name>``: its calls in flight at once, within the bounds it declared.

A ``Knobs`` value is immutable and always valid: it is built through
``Knobs.build`` / ``with_changes``, which check every value against its spec
before anything is applied, so a bad document can never half-apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

BULKHEAD_PREFIX = "bulkhead."


class KnobError(ValueError):
    """A knob name or value outside what its spec allows."""


@dataclass(frozen=True)
class KnobSpec:
    name: str
    minimum: int
    maximum: int
    default: int
    unit: str
    description: str
    # A share of a budget the controller divides among replicas (surgeguard.declaration):
    # without a value of its own in the control document, a replica runs at 0 slots (its
    # calls refused at once) until the controller grants it one, so 0 is a value too.
    budgeted: bool = False

    def check(self, value: object) -> int:
        # bool is an int subclass; "true" as a limit is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise KnobError(f"{self.name} must be an integer, got {value!r}")
        if self.budgeted and value == 0:
            return value  # no share granted (yet): the start rule's value
        if not self.minimum <= value <= self.maximum:
            raise KnobError(
                f"{self.name} must be in [{self.minimum}, {self.maximum}] {self.unit}, got {value}"
            )
        return value


DOOR_KNOB_SPECS: Mapping[str, KnobSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            KnobSpec(
                "concurrency_limit",
                1,
                10_000,
                64,
                "requests",
                "requests handled at once by one replica",
            ),
            KnobSpec(
                "queue_limit",
                0,
                100_000,
                128,
                "requests",
                "requests that may wait for a slot (the shed threshold)",
            ),
            KnobSpec(
                "queue_timeout_ms",
                1,
                60_000,
                200,
                "ms",
                "longest a request may wait for a slot before a 429",
            ),
        )
    }
)

# What a bulkhead knob allows when nobody declared otherwise (calls in flight).
BULKHEAD_MINIMUM, BULKHEAD_MAXIMUM = 1, 10_000


def bulkhead_knob(dependency: str) -> str:
    return f"{BULKHEAD_PREFIX}{dependency}"


def dependency_of(knob: str) -> str | None:
    """The dependency a ``bulkhead.<name>`` knob limits; None for the door's knobs."""
    return knob.removeprefix(BULKHEAD_PREFIX) if knob.startswith(BULKHEAD_PREFIX) else None


def bulkhead_spec(
    dependency: str,
    default: int,
    *,
    minimum: int = BULKHEAD_MINIMUM,
    maximum: int = BULKHEAD_MAXIMUM,
    description: str = "",
    budgeted: bool = False,
) -> KnobSpec:
    spec = KnobSpec(
        bulkhead_knob(dependency),
        minimum,
        maximum,
        default,
        "calls",
        description or f"calls to {dependency} in flight at once",
        budgeted,
    )
    if not 1 <= minimum <= default <= maximum:
        raise KnobError(
            f"{spec.name}: bounds must satisfy 1 <= min <= slots <= max, "
            f"got min {minimum}, slots {default}, max {maximum}"
        )
    return spec


def knob_spec(name: str, specs: Mapping[str, KnobSpec] = DOOR_KNOB_SPECS) -> KnobSpec:
    try:
        return specs[name]
    except KeyError:
        allowed = ", ".join(specs)
        raise KnobError(f"unknown knob {name!r}: allowed are {allowed}") from None


@dataclass(frozen=True)
class Knobs(Mapping[str, int]):
    """One complete, validated set of knob values (every knob of ``specs`` present)."""

    specs: Mapping[str, KnobSpec] = field(default_factory=lambda: DOOR_KNOB_SPECS)
    mapping: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.mapping:  # the defaults of the specs
            defaults = {n: s.default for n, s in self.specs.items()}
            object.__setattr__(self, "mapping", MappingProxyType(defaults))

    @classmethod
    def build(
        cls,
        changes: Mapping[str, object] | None = None,
        specs: Mapping[str, KnobSpec] = DOOR_KNOB_SPECS,
    ) -> Knobs:
        return cls(specs).with_changes(changes or {})

    def with_changes(self, changes: Mapping[str, object]) -> Knobs:
        """A new ``Knobs`` with ``changes`` applied (raises ``KnobError``, changing nothing)."""
        merged = dict(self.mapping)
        for name, value in changes.items():
            merged[name] = knob_spec(name, self.specs).check(value)
        return Knobs(self.specs, MappingProxyType(merged))

    def known(self, changes: Mapping[str, object]) -> dict[str, object]:
        """The part of ``changes`` naming knobs this set has (a control document may
        carry knobs of dependencies another version of the app declares)."""
        return {name: value for name, value in changes.items() if name in self.specs}

    def __getitem__(self, name: str) -> int:
        return self.mapping[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.mapping)

    def __len__(self) -> int:
        return len(self.mapping)

    @property
    def concurrency_limit(self) -> int:
        return self.mapping["concurrency_limit"]

    @property
    def queue_limit(self) -> int:
        return self.mapping["queue_limit"]

    @property
    def queue_timeout_ms(self) -> int:
        return self.mapping["queue_timeout_ms"]

    def bulkhead(self, dependency: str) -> int:
        return self.mapping[bulkhead_knob(dependency)]
