"""The knobs: every number the control plane may tune, with its bounds.

A ``Knobs`` value is immutable and always valid: it is built through
``Knobs.build`` / ``with_changes``, which check every value against its spec
before anything is applied, so a bad document can never half-apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEPENDENCIES: tuple[str, ...] = ("db", "cache", "recommendations", "payments")


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

    def check(self, value: object) -> int:
        # bool is an int subclass; "true" as a limit is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise KnobError(f"{self.name} must be an integer, got {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise KnobError(
                f"{self.name} must be in [{self.minimum}, {self.maximum}] {self.unit}, got {value}"
            )
        return value


def _specs() -> dict[str, KnobSpec]:
    specs = [
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
    ]
    defaults = {"db": 16, "cache": 64, "recommendations": 8, "payments": 8}
    for dep in DEPENDENCIES:
        specs.append(
            KnobSpec(
                f"bulkhead.{dep}",
                1,
                10_000,
                defaults[dep],
                "calls",
                f"calls to {dep} in flight at once",
            )
        )
    return {s.name: s for s in specs}


KNOB_SPECS: Mapping[str, KnobSpec] = MappingProxyType(_specs())


def knob_spec(name: str) -> KnobSpec:
    try:
        return KNOB_SPECS[name]
    except KeyError:
        allowed = ", ".join(KNOB_SPECS)
        raise KnobError(f"unknown knob {name!r}: allowed are {allowed}") from None


@dataclass(frozen=True)
class Knobs(Mapping[str, int]):
    """One complete, validated set of knob values (every knob present)."""

    mapping: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({n: s.default for n, s in KNOB_SPECS.items()})
    )

    @classmethod
    def build(cls, changes: Mapping[str, object] | None = None) -> Knobs:
        return cls().with_changes(changes or {})

    def with_changes(self, changes: Mapping[str, object]) -> Knobs:
        """A new ``Knobs`` with ``changes`` applied (raises ``KnobError``, changing nothing)."""
        merged = dict(self.mapping)
        for name, value in changes.items():
            merged[name] = knob_spec(name).check(value)
        return Knobs(MappingProxyType(merged))

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
        return self.mapping[f"bulkhead.{dependency}"]
