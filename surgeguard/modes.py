"""Degradation modes that operators (or the controller) switch on during a spike."""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    SHED_SHEDDABLE = "shed_sheddable"
    RECOMMENDATIONS_OFF = "recommendations_off"
    SERVE_STALE = "serve_stale"
    READ_ONLY = "read_only"

    @property
    def description(self) -> str:
        return MODE_DESCRIPTIONS[self]


MODE_DESCRIPTIONS: dict[Mode, str] = {
    Mode.SHED_SHEDDABLE: "Reject all sheddable traffic at the door with 429.",
    Mode.RECOMMENDATIONS_OFF: "Serve the feed without calling the recommendations service.",
    Mode.SERVE_STALE: "Serve cached data even when stale; skip the db when any copy exists.",
    Mode.READ_ONLY: "Writes get 503 with Retry-After; reads keep working.",
}


def parse_modes(names: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[Mode]:
    """Turn mode names into modes, naming the first unknown one in the error."""
    modes: set[Mode] = set()
    for name in names:
        try:
            modes.add(Mode(name))
        except ValueError:
            allowed = ", ".join(m.value for m in Mode)
            raise ValueError(f"unknown mode {name!r}: allowed are {allowed}") from None
    return frozenset(modes)
