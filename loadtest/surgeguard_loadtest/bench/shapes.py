"""The load shapes ``surgeguard bench`` runs each policy through, as pure plans.

- ``spike``: half the capacity in users, then ``factor`` times it within a few
  seconds, held, then the half again (the ``spike`` scenario's own fractions).
- ``square``: half the capacity, then three times it for 10 s and half for 10 s, in
  turn (the ``square`` scenario): a limit that oscillates shows here.
- ``drift``: twice the capacity in users throughout, while the db gets slower by
  steps of a second, to ``DRIFT_MULTIPLIER`` times its latency at the ramp's end, then
  is at once back to normal: the limit must follow it down and come back up.

Users are sized in multiples of the measured capacity (requests/s x 1 s: the readers
wait about a second between requests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from surgeguard.settings import SettingsError

SHAPES = ("spike", "square", "drift")
SPIKE_FACTOR = 5.0  # default: the spike's users, in multiples of the capacity
MAX_FACTOR = 20.0
SQUARE_FACTOR = 3.0
DRIFT_FACTOR = 2.0  # overloaded throughout, so the limit (not the demand) sets the pace
DRIFT_MULTIPLIER = 3.0  # the db's latency at the end of the ramp, times normal
BASELINE_FACTOR = 0.5


@dataclass(frozen=True)
class Drift:
    """The drift's timeline, seconds after its timeline started: normal until
    ``pre_s``, slower every second for ``ramp_s``, back to normal at the end of the
    ramp, then ``post_s`` to watch the limit come back."""

    pre_s: float
    ramp_s: float
    post_s: float

    @property
    def run_s(self) -> float:
        return self.pre_s + self.ramp_s + self.post_s

    def steps(self) -> list[tuple[float, float]]:
        """(seconds, the db's latency multiplier from then on): the ramp's seconds,
        then 1.0 when it ends."""
        seconds = max(1, round(self.ramp_s))
        ramp = [
            (self.pre_s + i, round(1.0 + (DRIFT_MULTIPLIER - 1.0) * (i + 1) / seconds, 3))
            for i in range(seconds)
        ]
        return [*ramp, (self.pre_s + seconds, 1.0)]


FULL_DRIFT = Drift(pre_s=20, ramp_s=60, post_s=40)
QUICK_DRIFT = Drift(pre_s=12, ramp_s=20, post_s=20)
FULL_SQUARE_S, QUICK_SQUARE_S = 85.0, 45.0  # 5 s baseline, then 4 (2) on/off cycles
MIN_SQUARE_S = 25.0  # one "on" and one "off"


@dataclass(frozen=True)
class ShapePlan:
    """What every policy gets: the Locust ``scenario`` with ``users`` at most and
    ``baseline`` users at rest, for ``run_s`` seconds; ``drift`` for the drift."""

    shape: str
    scenario: str
    users: int
    baseline: int
    run_s: float
    drift: Drift | None = None


def check_factor(factor: float | None, shape: str) -> float:
    """The spike's multiple of the capacity (default ``SPIKE_FACTOR``). Raises
    ``SettingsError``: only the spike takes one, in (1, ``MAX_FACTOR``]."""
    if factor is None:
        return SPIKE_FACTOR
    if shape != "spike":
        raise SettingsError(f"--factor is the spike's; the {shape} shape has its own load")
    if not (math.isfinite(factor) and 1.0 < factor <= MAX_FACTOR):
        raise SettingsError(f"--factor must be in (1, {MAX_FACTOR:g}], got {factor:g}")
    return factor


def check_shape(shape: str) -> str:
    if shape not in SHAPES:
        raise SettingsError(f"unknown shape {shape}: choose from {', '.join(SHAPES)}")
    return shape


def plan_shape(
    shape: str, capacity: float, spike_run_s: float, quick: bool, factor: float = SPIKE_FACTOR
) -> ShapePlan:
    """The plan for ``shape`` at ``capacity`` (requests/s); ``spike_run_s``: each
    policy's spike run (the square wave's too, when given shorter by ``--seconds``)."""
    baseline = max(1, round(capacity * BASELINE_FACTOR))
    if shape == "spike":
        users = max(2, round(capacity * factor))
        return ShapePlan(shape, "spike", users, baseline, spike_run_s)
    if shape == "square":
        run_s = QUICK_SQUARE_S if quick else FULL_SQUARE_S
        users = max(2, round(capacity * SQUARE_FACTOR))
        return ShapePlan(shape, "square", users, baseline, run_s)
    drift = QUICK_DRIFT if quick else FULL_DRIFT
    users = max(2, round(capacity * DRIFT_FACTOR))
    return ShapePlan(shape, "soak", users, users, drift.run_s, drift)
