"""The controller's decision step: signals in, decisions out. No I/O, no clock.

``Decider.decide(signals, knobs, now=...)`` is deterministic given its inputs and
the algorithms' own state; fetching metrics and publishing knobs wrap around it
(``controller.loop``). Each knob has its own congestion signal:

- ``concurrency_limit``: admitted p99 against the SLO; 5xx among admitted; a cut for
  latency is held instead when the latency is mostly event-loop lag while the
  replica's own CPU is not saturated (another process holds the CPU);
- ``queue_limit``: requests timing out in the queue; never more waiting than can be
  served within the queue-time budget (Little's law: rate x budget);
- ``bulkhead.<dependency>``: its p99 against its healthy baseline x inflation;
  its timeouts and errors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.algorithms import (
    CUT,
    GROW,
    HOLD,
    LimitAlgorithm,
    Sample,
    Update,
    build_algorithm,
)
from controller.bottleneck import Bottleneck, cpu_taken_elsewhere, name_bottleneck
from controller.config import ControllerConfig
from controller.ladder import DegradeLadder, ModeDecision
from controller.signals import DependencySignals, Signals
from controller.text import ms, share_of_core
from surgeguard.modes import Mode

__all__ = [
    "Bottleneck",
    "ControllerConfig",
    "Decider",
    "Decision",
    "ModeDecision",
    "TickResult",
    "current_knobs",
]


@dataclass(frozen=True)
class Decision:
    """One knob on one replica ("all": every replica), with a reason a person can read."""

    replica: str
    knob: str
    old: int
    new: int
    action: str  # cut | grow | hold
    reason: str
    applied: bool
    inputs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TickResult:
    decisions: tuple[Decision, ...]
    modes: tuple[ModeDecision, ...]
    bottleneck: Bottleneck

    @property
    def changes(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action != HOLD)


def current_knobs(signals: Signals) -> dict[str, int]:
    """The knob values a replica reports in its metrics (what it enforces now)."""
    knobs = {
        "concurrency_limit": int(signals.concurrency_limit),
        "queue_limit": int(signals.queue_limit),
    }
    for name, dep in signals.dependencies.items():
        knobs[f"bulkhead.{name}"] = int(dep.limit)
    return knobs


class Decider:
    def __init__(self, config: ControllerConfig | None = None) -> None:
        self.config = config or ControllerConfig()
        build_algorithm(  # fail now on an unknown name or a bad parameter
            self.config.algorithm,
            1,
            1,
            backoff=self.config.backoff,
            cooldown_s=self.config.cooldown_s,
            proportional=self.config.proportional,
        )
        self._algorithms: dict[tuple[str, str], LimitAlgorithm] = {}
        self._baselines: dict[tuple[str, str], tuple[float, float]] = {}  # (seconds, at)
        self.ladder = DegradeLadder(self.config)

    def _algorithm(self, replica: str, knob: str) -> LimitAlgorithm:
        key = (replica, knob)
        if key not in self._algorithms:
            low, high = self.config.bounds_of(knob)
            self._algorithms[key] = build_algorithm(
                self.config.algorithm,
                low,
                high,
                backoff=self.config.backoff,
                cooldown_s=self.config.cooldown_s,
                proportional=self.config.proportional,
            )
        return self._algorithms[key]

    def baseline(self, replica: str, dependency: str) -> float:
        return self._baselines.get((replica, dependency), (math.nan, 0.0))[0]

    def decide(
        self,
        signals: Signals,
        knobs: Mapping[str, int],
        *,
        now: float,
        pins: frozenset[str] = frozenset(),
        modes: frozenset[Mode] = frozenset(),
        autopilot: bool = True,
    ) -> TickResult:
        if signals.stale:
            return TickResult((), (), Bottleneck("none", f"{signals.replica}: no data this tick"))
        samples: dict[str, tuple[Sample, dict[str, float]]] = {}
        if "concurrency_limit" in knobs:
            samples["concurrency_limit"] = self._concurrency(signals, knobs, now)
        if "queue_limit" in knobs:
            samples["queue_limit"] = self._queue(signals, knobs, now)
        for name, dep in signals.dependencies.items():
            knob = f"bulkhead.{name}"
            if knob in knobs:
                samples[knob] = self._bulkhead(signals.replica, dep, knobs[knob], now)

        decisions = []
        for knob, (sample, inputs) in samples.items():
            if knob == "concurrency_limit":
                update = self._concurrency_update(signals, sample)
            else:
                update = self._algorithm(signals.replica, knob).update(sample)
            new = update.limit
            if knob == "queue_limit":
                new = min(new, max(self.config.bounds_of(knob)[0], int(inputs["little_cap"])))
            action = CUT if new < sample.limit else GROW if new > sample.limit else HOLD
            reason = (
                update.why if action == HOLD else (f"{update.why}: {knob} {sample.limit} -> {new}")
            )
            applied = autopilot and knob not in pins and action != HOLD
            if action != HOLD and knob in pins:
                reason += " (pinned: not applied)"
            elif action != HOLD and not autopilot:
                reason += " (autopilot paused: would have done this)"
            decisions.append(
                Decision(signals.replica, knob, sample.limit, new, action, reason, applied, inputs)
            )
        return TickResult(
            tuple(decisions),
            self.ladder.step(signals, knobs, modes, autopilot),
            self.bottleneck(signals),
        )

    def _cpu_taken_elsewhere(self, s: Signals) -> bool:
        return cpu_taken_elsewhere(
            s,
            target_s=self.config.target_s,
            lag_share=self.config.lag_share,
            cpu_saturated=self.config.cpu_saturated,
        )

    def _concurrency_update(self, s: Signals, sample: Sample) -> Update:
        """The algorithm's update, except that a cut for latency the event loop's lag
        explains is held while the replica's own CPU is not saturated. The algorithm
        decides on a copy first: a held tick leaves its state as it was (no cool-down
        started, no recovery point set), as if the tick had not been seen."""
        key = (s.replica, "concurrency_limit")
        algorithm = self._algorithm(*key)
        if sample.overloaded or not self._cpu_taken_elsewhere(s):
            return algorithm.update(sample)
        trial = copy.deepcopy(algorithm)
        update = trial.update(sample)
        if update.action != CUT:
            self._algorithms[key] = trial  # not a cut: keep what it learned
            return update
        return Update(
            sample.limit,
            HOLD,
            f"{sample.over()}, but {ms(s.loop_lag_p99_s)} of it is event-loop lag while "
            f"{'this replica uses' if s.replica != 'all' else 'the busiest replica uses'} "
            f"{share_of_core(s.cpu_utilisation)}: the CPU is taken by something else, "
            f"a smaller limit cannot help; holding {sample.limit}",
        )

    # -- per-knob samples ---------------------------------------------------------------

    def _concurrency(
        self, s: Signals, knobs: Mapping[str, int], now: float
    ) -> tuple[Sample, dict[str, float]]:
        # Real server errors only: a 503 from a full or timed-out bulkhead is that
        # dependency's own knob's business (and isolation working), and cutting every
        # route's concurrency for it would starve the routes that do not need it.
        errors = s.server_error_rate > self.config.error_threshold
        headroom = self.config.headroom
        # Aim a little under the SLO: a p99 hovering at the SLO breaks it half the time.
        sample = Sample(
            now=now,
            limit=knobs["concurrency_limit"],
            latency_s=s.p99_s,
            target_s=self.config.target_s,
            peak_in_flight=s.peak_in_flight,
            overloaded=errors,
            overload_reason=f"5xx (not 503) {s.server_error_rate:.0%} of admitted",
            target_label="target" if headroom else "SLO",
            target_note=(
                f" (SLO {ms(self.config.slo_s)} less {headroom:.0%} headroom)" if headroom else ""
            ),
        )
        inputs = {
            "p99_s": s.p99_s,
            "peak_in_flight": s.peak_in_flight,
            "error_rate": s.error_rate,
            "server_error_rate": s.server_error_rate,
            "admitted_per_s": s.admitted_per_s,
            "loop_lag_p99_s": s.loop_lag_p99_s,
            "cpu_utilisation": s.cpu_utilisation,
        }
        return sample, inputs

    def _queue(
        self, s: Signals, knobs: Mapping[str, int], now: float
    ) -> tuple[Sample, dict[str, float]]:
        budget = s.queue_timeout_s if s.queue_timeout_s > 0 else self.config.slo_s
        # Little's law: at most rate x budget can be served within the budget.
        little_cap = math.ceil(s.admitted_per_s * budget)
        timeouts = s.rejected_per_s.get("queue_timeout", 0.0)
        timing_out = timeouts > self.config.queue_timeout_share * max(s.admitted_per_s, 1.0)
        limit = knobs["queue_limit"]
        full = s.rejected_per_s.get("queue_full", 0.0) > 0
        sample = Sample(
            now=now,
            limit=limit,
            latency_s=s.queue_wait_p99_s,
            target_s=budget,
            peak_in_flight=max(s.queue_depth, float(limit) if full else 0.0),
            overloaded=timing_out or (limit > max(little_cap, 1) and s.admitted_per_s > 0),
            overload_reason=(
                f"{timeouts:.0f}/s timed out waiting"
                if timing_out
                else f"Little's law: {s.admitted_per_s:.0f} req/s x {ms(budget)} = "
                f"{little_cap} may wait"
            ),
            signal_label="queue wait p99",
            target_label="budget",
        )
        inputs = {
            "queue_wait_p99_s": s.queue_wait_p99_s,
            "queue_depth": s.queue_depth,
            "timeouts_per_s": timeouts,
            "little_cap": float(little_cap),
        }
        return sample, inputs

    def _bulkhead(
        self, replica: str, d: DependencySignals, limit: int, now: float
    ) -> tuple[Sample, dict[str, float]]:
        key = (replica, d.name)
        baseline, seen_at = self._baselines.get(key, (math.nan, now))
        if not math.isnan(d.p50_s) and d.p50_s > 0:
            # Healthy baseline: the lowest median seen (under overload the median is
            # inflated, so never average it in), allowed to drift up by
            # ``baseline_drift`` per minute so a permanently slower dependency is
            # eventually accepted as normal.
            drifted = baseline * (1 + self.config.baseline_drift) ** ((now - seen_at) / 60)
            baseline = d.p50_s if math.isnan(baseline) else min(drifted, d.p50_s)
            self._baselines[key] = (baseline, now)
        failing = max(d.timeout_rate, d.error_rate)
        target = (
            max(baseline * self.config.inflation, baseline + self.config.inflation_floor_s)
            if not math.isnan(baseline)
            else math.inf
        )
        sample = Sample(
            now=now,
            limit=limit,
            latency_s=d.p99_s,
            target_s=target,
            peak_in_flight=max(
                d.mean_in_flight, d.in_flight, float(limit) if d.rejected_per_s > 0 else 0.0
            ),
            overloaded=failing > self.config.failure_threshold,
            overload_reason=(f"{d.name} timeouts {d.timeout_rate:.0%}, errors {d.error_rate:.0%}"),
            signal_label=f"{d.name} p99",
            target_label=f"{self.config.inflation:g}x baseline"
            if baseline * self.config.inflation >= baseline + self.config.inflation_floor_s
            else f"baseline + {ms(self.config.inflation_floor_s)} =",
        )
        inputs = {
            "p99_s": d.p99_s,
            "baseline_s": baseline,
            "utilisation": d.utilisation,
            "timeout_rate": d.timeout_rate,
            "error_rate": d.error_rate,
        }
        return sample, inputs

    def bottleneck(self, s: Signals) -> Bottleneck:
        return name_bottleneck(
            s,
            lambda dependency: self.baseline(s.replica, dependency),
            self.config.inflation,
            cpu_elsewhere=self._cpu_taken_elsewhere(s),
        )
