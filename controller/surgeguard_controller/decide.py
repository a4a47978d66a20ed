"""The controller's decision step: signals in, decisions out. No I/O, no clock.

``Decider.decide(signals, knobs, now=...)`` is deterministic given its inputs and
the algorithms' own state; fetching metrics and publishing knobs wrap around it
(``surgeguard_controller.loop``). Each knob has its own congestion signal:

- ``concurrency_limit``: admitted p99 against the SLO; 5xx among admitted; a cut for
  latency is held instead when the latency is mostly event-loop lag while the
  replica's own CPU is not saturated (another process holds the CPU);
- ``queue_limit``: requests timing out in the queue; never more waiting than can be
  served within the queue-time budget (Little's law: rate x budget);
- ``bulkhead.<dependency>``: its p99 against its healthy baseline x inflation;
  its timeouts and errors.

The hold rule (``ControllerConfig.hold_rule``, issue 11) asks every cut for evidence
that the knob causes the latency: no cut of the limit or the queue while the CPU is
spent on rejections; no cut of a bulkhead whose latency the loop's lag explains; and
a knob whose cuts for latency did not lower it goes back and holds (``holds``). The
algorithms are asked "would this cut?" with their state passed in and out, so a held
tick leaves them as if they had not seen it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from surgeguard_controller import holds
from surgeguard_controller.algorithms import (
    CUT,
    GROW,
    HOLD,
    LimitAlgorithm,
    Sample,
    Update,
    build_algorithm,
)
from surgeguard_controller.bottleneck import (
    Bottleneck,
    cpu_taken_elsewhere,
    name_bottleneck,
    rejection_numbers,
    rejection_work,
)
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.ladder import DegradeLadder, ModeDecision
from surgeguard_controller.obey import NOT_APPLIED
from surgeguard_controller.sensing.signals import DependencySignals, Signals
from surgeguard_controller.text import ms, share_of_core

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
        self._cuts: dict[tuple[str, str], holds.CutHistory] = {}  # (replica, knob)
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
        modes: frozenset[str] = frozenset(),
        autopilot: bool = True,
        obeyed: bool = True,
    ) -> TickResult:
        """``obeyed``: False while the replica does not apply the control plane
        (``surgeguard_controller.obey``); its moves are then decided and recorded, not applied."""
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
            will_apply = autopilot and knob not in pins and obeyed
            update = self._update(signals, knob, sample, inputs, now=now, will_apply=will_apply)
            new, action = update.limit, update.action
            reason = (
                update.why if action == HOLD else (f"{update.why}: {knob} {sample.limit} -> {new}")
            )
            applied = will_apply and action != HOLD
            if action != HOLD and knob in pins:
                reason += " (pinned: not applied)"
            elif action != HOLD and not autopilot:
                reason += " (autopilot paused: would have done this)"
            elif action != HOLD and not obeyed:
                reason += NOT_APPLIED
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

    def _rejection_work(self, s: Signals) -> bool:
        return self.config.hold_rule and rejection_work(
            s,
            target_s=self.config.target_s,
            lag_share=self.config.lag_share,
            ratio=self.config.rejection_ratio,
            min_per_s=self.config.rejection_min_per_s,
            loop_hops=self.config.loop_hops,
        )

    def _update(
        self,
        s: Signals,
        knob: str,
        sample: Sample,
        inputs: Mapping[str, float],
        *,
        now: float,
        will_apply: bool,
    ) -> Update:
        """The knob's next value, with ``action`` set from it. The algorithm is asked
        with its state passed in; the state it returns is kept unless the tick is held
        or the knob goes back (then the algorithm did not see the tick: no cool-down
        started, no recovery point set)."""
        key = (s.replica, knob)
        algorithm = self._algorithm(*key)
        state, proposed = algorithm.step(algorithm.state, sample)
        new = proposed.limit
        if knob == "queue_limit" and s.admitted_per_s > 0:
            # No traffic says nothing about how much may wait: an idle replica keeps
            # its queue for the next burst instead of having it cut to Little's 0.
            new = min(new, max(self.config.bounds_of(knob)[0], int(inputs["little_cap"])))
        action = CUT if new < sample.limit else GROW if new > sample.limit else HOLD
        update = Update(new, action, proposed.why)
        history = self._cuts.get(key)
        if history is not None and not history.applies(
            sample.limit, now=now, wait_s=self.config.cooldown_s
        ):
            history = None
        instead = self._instead(s, knob, sample, update, history, now=now)
        if instead is not None:
            if instead.action == GROW and will_apply:  # back after futile cuts
                self._cuts[key] = holds.gone_back(
                    instead.limit, now=now, hold_s=self.config.futile_hold_s
                )
            return instead
        algorithm.state = state
        if self.config.hold_rule and action != HOLD:
            if action == CUT and will_apply and holds.for_latency(sample):
                self._cuts[key] = holds.after_cut(
                    history, sample, new, now=now, keep=self.config.futile_cuts
                )
            else:  # a grow, or a cut for another reason: the next cuts are a new story
                self._cuts.pop(key, None)
        return update

    def _futile(self, history: holds.CutHistory, sample: Sample, now: float) -> holds.Cut | None:
        return holds.futile(
            history,
            sample,
            now=now,
            cuts=self.config.futile_cuts,
            margin=self.config.futile_margin,
            wait_s=self.config.cooldown_s,
        )

    def _instead(
        self,
        s: Signals,
        knob: str,
        sample: Sample,
        update: Update,
        history: holds.CutHistory | None,
        *,
        now: float,
    ) -> Update | None:
        """What to do instead of the algorithm's ``update``, or None to do it: hold a
        cut the evidence does not support, or go back after cuts that did not help."""
        limit = sample.limit
        if (
            knob == "concurrency_limit"
            and update.action == CUT
            and not sample.overloaded
            and self._cpu_taken_elsewhere(s)
        ):
            return Update(
                limit,
                HOLD,
                f"{sample.over()}, but {ms(s.loop_lag_p99_s)} of it is event-loop lag while "
                f"{'this replica uses' if s.replica != 'all' else 'the busiest replica uses'} "
                f"{share_of_core(s.cpu_utilisation)}: the CPU is taken by something else, "
                f"a smaller limit cannot help; holding {limit}",
            )
        if not self.config.hold_rule:
            return None
        smaller = {"concurrency_limit": "a smaller limit", "queue_limit": "a shorter queue"}
        if (
            knob in smaller
            and update.action == CUT
            # An error-driven cut of the limit stands: errors are the limit's evidence.
            and (knob == "queue_limit" or not sample.overloaded)
            and self._rejection_work(s)
        ):
            why = sample.overload_reason if sample.overloaded else sample.over()
            return Update(
                limit,
                HOLD,
                f"{why}, but the CPU is spent saying no: {rejection_numbers(s)}, event-loop "
                f"lag {ms(s.loop_lag_p99_s)} of p99 {ms(s.p99_s)}; {smaller[knob]} cannot "
                f"lower p99; holding {limit}",
            )
        lag = s.loop_lag_p99_s
        if (
            knob.startswith("bulkhead.")
            and update.action == CUT
            and holds.for_latency(sample)
            and not math.isnan(lag)
            and sample.latency_s - lag <= sample.target_s
        ):
            return Update(
                limit,
                HOLD,
                f"{sample.over()}, but {ms(lag)} of it is event-loop lag and without it "
                f"{ms(max(0.0, sample.latency_s - lag))} is within {sample.target_label}: "
                f"not {knob.removeprefix('bulkhead.')}'s doing; fewer slots cannot lower "
                f"it; holding {limit}",
            )
        if history is None or not holds.for_latency(sample) or update.action == GROW:
            return None
        if history.held(now):
            if update.action != CUT:
                return None
            return Update(limit, HOLD, holds.held_reason(history, sample, knob, now=now))
        hold_s = self.config.futile_hold_s
        if knob.startswith("bulkhead."):
            first = holds.costly(history, sample, now=now, wait_s=self.config.cooldown_s)
            if first is not None:
                why = holds.costly_reason(history, first, sample, hold_s=hold_s)
                return Update(min(first.before, self.config.bounds_of(knob)[1]), GROW, why)
        first = self._futile(history, sample, now)
        if first is None:
            return None
        cuts = self.config.futile_cuts
        why = holds.back_reason(history, first, sample, cuts=cuts, hold_s=hold_s)
        return Update(min(first.before, self.config.bounds_of(knob)[1]), GROW, why)

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
            "rejected_per_s": s.rejected_total_per_s,
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
            throughput_per_s=d.calls_per_s * max(0.0, 1.0 - d.error_rate - d.timeout_rate),
            refusing=d.rejected_per_s > 0,
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
            self.config,
            cpu_elsewhere=self._cpu_taken_elsewhere(s),
            rejecting=self._rejection_work(s),
        )
