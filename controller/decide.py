"""The controller's decision step: signals in, decisions out. No I/O, no clock.

``Decider.decide(signals, knobs, now=...)`` is deterministic given its inputs and
the algorithms' own state; fetching metrics and publishing knobs wrap around it
(``controller.loop``). Each knob has its own congestion signal:

- ``concurrency_limit``: admitted p99 against the SLO; 5xx among admitted;
- ``queue_limit``: requests timing out in the queue; never more waiting than can be
  served within the queue-time budget (Little's law: rate x budget);
- ``bulkhead.<dependency>``: its p99 against its healthy baseline x inflation;
  its timeouts and errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.algorithms import CUT, GROW, HOLD, LimitAlgorithm, Sample, build_algorithm
from controller.signals import DependencySignals, Signals
from surgeguard.knobs import KNOB_SPECS
from surgeguard.modes import Mode

DEGRADE_LADDER: tuple[Mode, ...] = (Mode.SHED_SHEDDABLE, Mode.RECOMMENDATIONS_OFF)


@dataclass(frozen=True)
class ControllerConfig:
    slo_s: float = 0.25
    algorithm: str = "aimd"
    error_threshold: float = 0.05  # share of admitted answered 5xx that counts as congestion
    failure_threshold: float = 0.05  # share of a dependency's calls timing out or failing
    inflation: float = 3.0  # dependency p99 over baseline x this = congested
    baseline_drift: float = 0.05  # a dependency's healthy baseline may rise 5% a minute
    queue_timeout_share: float = 0.01  # queue timeouts per admitted that count as congestion
    auto_degrade: bool = False
    degrade_after_ticks: int = 5
    recover_after_ticks: int = 10
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # knob -> (min, max)
    headroom: float = 0.2  # aim admitted p99 this share below the SLO, [0, 0.5]
    backoff: float = 0.9  # AIMD's multiplicative cut, [0.5, 1)
    cooldown_s: float = 2.0  # no second cut this soon after one, seconds
    proportional: bool = True  # far over the SLO, cut by SLO / p99 (bounded to [0.5, backoff])

    def bounds_of(self, knob: str) -> tuple[int, int]:
        spec = KNOB_SPECS[knob]
        return self.bounds.get(knob, (spec.minimum, spec.maximum))

    def __post_init__(self) -> None:
        for knob, (low, high) in self.bounds.items():
            spec = KNOB_SPECS[knob]
            if not spec.minimum <= low <= high <= spec.maximum:
                raise ValueError(
                    f"bounds of {knob} must be within [{spec.minimum}, "
                    f"{spec.maximum}] with min <= max, got [{low}, {high}]"
                )
        if self.slo_s <= 0:
            raise ValueError(f"slo_s must be > 0 seconds, got {self.slo_s}")
        if not 0 <= self.headroom <= 0.5:
            raise ValueError(f"headroom must be in [0, 0.5], got {self.headroom}")
        if self.inflation <= 1:
            raise ValueError(f"inflation must be > 1, got {self.inflation}")
        for name in ("error_threshold", "failure_threshold", "queue_timeout_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")


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
class ModeDecision:
    mode: Mode
    active: bool
    reason: str


@dataclass(frozen=True)
class Bottleneck:
    name: str  # a dependency, "admission", or "none"
    sentence: str
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TickResult:
    decisions: tuple[Decision, ...]
    modes: tuple[ModeDecision, ...]
    bottleneck: Bottleneck

    @property
    def changes(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action != HOLD)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


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
        self._unhealthy_ticks = 0
        self._healthy_ticks = 0
        self.auto_modes: list[Mode] = []  # modes this controller switched on, in order

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
            self._ladder(signals, knobs, modes, autopilot),
            self.bottleneck(signals),
        )

    # -- per-knob samples ---------------------------------------------------------------

    def _concurrency(
        self, s: Signals, knobs: Mapping[str, int], now: float
    ) -> tuple[Sample, dict[str, float]]:
        errors = s.error_rate > self.config.error_threshold
        headroom = self.config.headroom
        # Aim a little under the SLO: a p99 hovering at the SLO breaks it half the time.
        sample = Sample(
            now=now,
            limit=knobs["concurrency_limit"],
            latency_s=s.p99_s,
            target_s=self.config.slo_s * (1 - headroom),
            peak_in_flight=s.peak_in_flight,
            overloaded=errors,
            overload_reason=f"5xx {s.error_rate:.0%} of admitted",
            target_label="target" if headroom else "SLO",
            target_note=(
                f" (SLO {_ms(self.config.slo_s)} less {headroom:.0%} headroom)" if headroom else ""
            ),
        )
        inputs = {
            "p99_s": s.p99_s,
            "peak_in_flight": s.peak_in_flight,
            "error_rate": s.error_rate,
            "admitted_per_s": s.admitted_per_s,
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
                else f"Little's law: {s.admitted_per_s:.0f} req/s x {_ms(budget)} = "
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
        target = baseline * self.config.inflation if not math.isnan(baseline) else math.inf
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
            target_label=f"{self.config.inflation:g}x baseline",
        )
        inputs = {
            "p99_s": d.p99_s,
            "baseline_s": baseline,
            "utilisation": d.utilisation,
            "timeout_rate": d.timeout_rate,
            "error_rate": d.error_rate,
        }
        return sample, inputs

    # -- the bottleneck -----------------------------------------------------------------

    def bottleneck(self, s: Signals) -> Bottleneck:
        scores: dict[str, float] = {}
        sentences: dict[str, str] = {}
        for name, d in s.dependencies.items():
            baseline = self.baseline(s.replica, name)
            inflation = d.p99_s / baseline if baseline > 0 and not math.isnan(d.p99_s) else 1.0
            scores[name] = d.utilisation * max(1.0, inflation)
            sentences[name] = (
                f"{name}: {d.utilisation:.0%} of its {d.limit:.0f} slots busy, "
                f"p99 {_ms(d.p99_s) if not math.isnan(d.p99_s) else 'n/a'} = "
                f"{inflation:.1f}x its healthy {_ms(baseline) if baseline > 0 else 'n/a'}"
            )
        worst = max(scores, key=lambda n: scores[n], default=None)
        saturated = s.queue_depth > 0 or s.rejected_total_per_s > 0
        limit_use = s.peak_in_flight / s.concurrency_limit if s.concurrency_limit else 0.0
        if worst is not None and (
            s.dependencies[worst].utilisation >= 0.8 or scores[worst] >= self.config.inflation
        ):
            return Bottleneck(worst, sentences[worst], scores)
        if saturated:
            return Bottleneck(
                "admission",
                (
                    f"admission: {limit_use:.0%} of the limit {s.concurrency_limit:.0f} in use, "
                    f"{s.queue_depth:.0f} waiting, {s.rejected_total_per_s:.0f}/s turned away; "
                    f"no dependency is saturated"
                ),
                scores,
            )
        return Bottleneck("none", "nothing is saturated", scores)

    # -- the auto-degrade ladder --------------------------------------------------------

    def _ladder(
        self, s: Signals, knobs: Mapping[str, int], modes: frozenset[Mode], autopilot: bool
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
            for mode in DEGRADE_LADDER:
                if mode not in modes:
                    self.auto_modes.append(mode)
                    return (
                        ModeDecision(
                            mode,
                            True,
                            (
                                f"p99 {_ms(s.p99_s)} > SLO {_ms(self.config.slo_s)} for "
                                f"{self.config.degrade_after_ticks} ticks with "
                                f"concurrency_limit at its minimum {floor}: {mode.value} on"
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
                            f"p99 {_ms(s.p99_s)} within SLO for {self.config.recover_after_ticks} "
                            f"ticks: {mode.value} off"
                        ),
                    ),
                )
        return ()
