"""The optional auto-degrade ladder: switch degradation modes on when limits alone
cannot hold the SLO, and off again once it has been healthy for a while."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.sensing.signals import Signals
from surgeguard_controller.text import ms


@dataclass(frozen=True)
class ModeDecision:
    mode: str
    active: bool
    reason: str


class DegradeLadder:
    """Counts consecutive failing / healthy ticks; remembers which modes it switched
    on, so it only ever switches off its own (never an operator's)."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._unhealthy_ticks = 0
        self._healthy_ticks = 0
        self.auto_modes: list[str] = []

    def step(
        self, s: Signals, knobs: Mapping[str, int], modes: frozenset[str], autopilot: bool
    ) -> tuple[ModeDecision, ...]:
        if not self.config.auto_degrade or not autopilot or math.isnan(s.p99_s):
            return ()
        floor = self.config.bounds_of("concurrency_limit")[0]
        failing = s.p99_s > self.config.slo_s and knobs.get("concurrency_limit", 0) <= floor
        self._unhealthy_ticks = self._unhealthy_ticks + 1 if failing else 0
        healthy = s.p99_s <= self.config.slo_s
        self._healthy_ticks = self._healthy_ticks + 1 if healthy else 0
        if self._unhealthy_ticks >= self.config.degrade_after_ticks:
            self._unhealthy_ticks = 0
            # The modes the replicas declare for it, in their order (shed_sheddable first).
            for mode in self.config.catalogue.ladder:
                if mode not in modes:
                    self.auto_modes.append(mode)
                    return (
                        ModeDecision(
                            mode,
                            True,
                            (
                                f"p99 {ms(s.p99_s)} > SLO {ms(self.config.slo_s)} for "
                                f"{self.config.degrade_after_ticks} ticks with "
                                f"concurrency_limit at its minimum {floor}: {mode} on"
                            ),
                        ),
                    )
        if self._healthy_ticks >= self.config.recover_after_ticks and self.auto_modes:
            self._healthy_ticks = 0
            mode = self.auto_modes.pop()
            if mode in modes:
                return (
                    ModeDecision(
                        mode,
                        False,
                        (
                            f"p99 {ms(s.p99_s)} within SLO for {self.config.recover_after_ticks} "
                            f"ticks: {mode} off"
                        ),
                    ),
                )
        return ()
