"""Chaos settings for drills: make a dependency slow or flaky on purpose."""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_MULTIPLIER_RANGE = (0.1, 100.0)


@dataclass(frozen=True)
class Chaos:
    """``latency_multiplier`` scales the dependency's work (1 = normal);
    ``error_rate`` is the share of calls that fail (0..1)."""

    latency_multiplier: float = 1.0
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        low, high = LATENCY_MULTIPLIER_RANGE
        if not low <= self.latency_multiplier <= high:
            raise ValueError(
                f"latency_multiplier must be in [{low}, {high}], got {self.latency_multiplier}"
            )
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")

    @property
    def is_calm(self) -> bool:
        return self.latency_multiplier == 1.0 and self.error_rate == 0.0


CALM = Chaos()
