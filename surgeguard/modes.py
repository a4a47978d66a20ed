"""Degradation modes: named switches that operators (or the controller) turn on
during a spike.

A mode is a name. The library acts on two of them at the door (``DOOR_MODES``); an
application declares its own (``surgeguard.declaration.Declaration``) and decides
what they do in its handlers, reading ``modes`` from its protection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SHED_SHEDDABLE = "shed_sheddable"
READ_ONLY = "read_only"

MODE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class ModeSpec:
    """One degradation mode: its name, what it does (shown to operators), and whether
    the controller's auto-degrade ladder may switch it on (in declaration order, after
    ``shed_sheddable``). ``door``: the library acts on it, not the application."""

    name: str
    description: str
    auto_degrade: bool = False
    door: bool = False

    def __post_init__(self) -> None:
        if not MODE_NAME.match(self.name):
            raise ValueError(
                f"mode name {self.name!r} must be 1-40 of a-z, 0-9 and _, starting with a letter"
            )
        if not self.description.strip():
            raise ValueError(f"mode {self.name!r} needs a description (operators read it)")


DOOR_MODES: tuple[ModeSpec, ...] = (
    ModeSpec(
        SHED_SHEDDABLE,
        "Reject all sheddable traffic at the door with 429.",
        auto_degrade=True,
        door=True,
    ),
    ModeSpec(READ_ONLY, "Writes get 503 with Retry-After; reads keep working.", door=True),
)


DOOR_MODE_NAMES: frozenset[str] = frozenset(m.name for m in DOOR_MODES)


def parse_modes(names: Iterable[str], known: Mapping[str, ModeSpec]) -> frozenset[str]:
    """The named modes, naming the first unknown one and the allowed ones in the error."""
    modes: set[str] = set()
    for name in names:
        if name not in known:
            allowed = ", ".join(known)
            raise ValueError(f"unknown mode {name!r}: allowed are {allowed}")
        modes.add(name)
    return frozenset(modes)


def split_modes(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]`` (a comma-separated setting or flag)."""
    return [m.strip() for m in text.split(",") if m.strip()]
