"""The budgets in the control loop: each tick, divide every budgeted dependency's total
among the replicas (``surgeguard_controller.budgets``) and hold each replica's
``bulkhead.<dependency>`` to its share.

What a replica gets is the smaller of what its own limit algorithm decides (AIMD, from
that replica's signals) and its share: the algorithm still cuts a bulkhead whose
dependency is slow, the budget caps the sum. The shares live in the control document
(each replica's own ``bulkhead.<dependency>``), so a restarted controller starts from
what was published. A move made for the budget is a ``Decision`` with a reason an
operator can read ("budget db 24: share 12 -> 8, demand 3.1 of 9.4 in all"); a pinned
knob is the operator's and is not divided; with the autopilot off the moves are said,
not applied; a replica that does not obey has its moves recorded as not applied.

Which replicas hold slots: every replica the loop knows (one not read this tick keeps
its share: it may still enforce it) and every replica with a share in the document
(one that left keeps its slots until it is dropped from the document). A replica that
just started has no share and enforces 0 slots (``ControlState.knobs_for``): nothing
is kept in reserve for it, so it waits about one to three ticks for its first grant
(seen, the others cut, granted once they enforce the cuts); that grant is the budget's
alone (the limit algorithm has no calls of its to judge).

Demand: calls in flight + waiting for a slot + the slots the calls its bulkhead refused
would have needed (``_refused_demand``), so a replica turning calls away is not taken
for one whose share suffices.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from surgeguard import metric_names as names
from surgeguard.controlplane import ControlState
from surgeguard.knobs import bulkhead_knob
from surgeguard_controller.algorithms import CUT, GROW, HOLD
from surgeguard_controller.budgets import Claim, Division, divide
from surgeguard_controller.config import ControllerConfig
from surgeguard_controller.decide import Decision
from surgeguard_controller.metrics import ControllerMetrics
from surgeguard_controller.obey import NOT_APPLIED
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import DependencySignals, Signals

log = logging.getLogger("controller.budgets")

PAUSED = " (autopilot paused: would have done this)"


class View(Protocol):
    """What the loop knows of one replica (``surgeguard_controller.replica_views.ReplicaView``)."""

    replica: str
    signals: Signals
    knobs: dict[str, int]
    enforced_knobs: dict[str, int]

    @property
    def obeying(self) -> bool: ...


@dataclass(frozen=True)
class Report:
    """One budget as the state, the dashboard and the metrics show it."""

    total: int
    source: str
    shares: Mapping[str, int]
    demand: Mapping[str, float]
    reason: str

    def json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "source": self.source,
            "shares": dict(self.shares),
            "demand": {r: round(d, 2) for r, d in self.demand.items()},
            "reason": self.reason,
        }


class Budgets:
    """Every budget's division, tick by tick, and what it last said."""

    def __init__(self, metrics: ControllerMetrics | None = None) -> None:
        self.metrics = metrics
        self.reports: dict[str, Report] = {}
        self._over: dict[str, int] = {}  # dependency -> calls over its budget, as last logged
        self._series: set[tuple[str, str]] = set()  # (dependency, replica) shares exported

    def json(self) -> dict[str, Any]:
        return {d: r.json() for d, r in sorted(self.reports.items())}

    def apply(
        self,
        decisions: Sequence[Decision],
        windows: Iterable[tuple[View, Scrape, Scrape]],
        views: Iterable[View],
        state: ControlState,
        config: ControllerConfig,
    ) -> list[Decision]:
        """``decisions`` with each budgeted bulkhead held to its replica's share (the
        limit algorithm's decisions for it replaced, and moves added where the budget
        alone moves a share)."""
        fresh = {view.replica: (view, now) for view, _, now in windows}
        known = list(views)
        out = list(decisions)
        reports: dict[str, Report] = {}
        for dependency, total in sorted(config.catalogue.budgets.items()):
            knob = bulkhead_knob(dependency)
            if knob not in config.catalogue.knob_specs:
                continue
            claims = _claims(dependency, knob, known, fresh, state)
            if knob in state.pins:
                value = state.knobs.get(knob)
                reports[dependency] = Report(
                    total,
                    "replicas",
                    {c.replica: c.enforced or 0 for c in claims},
                    {c.replica: c.demand for c in claims if c.demand is not None},
                    f"budget {dependency} {total}: {knob} is pinned at {value} by an operator "
                    f"({len(claims)} replicas, {len(claims) * (value or 0)} in all): not divided",
                )
                continue
            low, high = config.bounds_of(knob)
            low = max(1, low)  # a bulkhead of 0 calls is no share
            division = divide(dependency, total, claims, minimum=low, maximum=max(low, high))
            self._say_over(dependency, division)
            out = _held_to_shares(out, knob, division, claims, fresh, state)
            shares = {c.replica: _published(out, c, knob, division) for c in claims}
            reports[dependency] = Report(
                total,
                "replicas",
                shares,
                {c.replica: c.demand for c in claims if c.demand is not None},
                division.reason,
            )
        self.reports = reports
        self._export()
        return out

    def _say_over(self, dependency: str, division: Division) -> None:
        """Log a budget too small for the minimums once when it starts, changes or ends."""
        if division.over != self._over.get(dependency, 0):
            if division.over:
                log.warning("%s", division.reason)
            else:
                log.info("budget %s %d covers every minimum again", dependency, division.total)
            self._over[dependency] = division.over

    def _export(self) -> None:
        if self.metrics is None:
            return
        series = set()
        for dependency, report in self.reports.items():
            self.metrics.budget_total.labels(dependency).set(report.total)
            for replica, share in report.shares.items():
                self.metrics.budget_share.labels(dependency, replica).set(share)
                series.add((dependency, replica))
        for dependency, replica in self._series - series:  # a replica that left
            self.metrics.budget_share.remove(dependency, replica)
        for dependency in {d for d, _ in self._series} - set(self.reports):
            self.metrics.budget_total.remove(dependency)
        self._series = series


def _claims(
    dependency: str,
    knob: str,
    views: Sequence[View],
    fresh: Mapping[str, tuple[View, Scrape]],
    state: ControlState,
) -> list[Claim]:
    claims: list[Claim] = []
    latency = _fleet_latency(dependency, [fresh[r][0] for r in fresh])
    for view in views:
        # What it enforces: its surgeguard_dependency_limit as last read, else (read
        # once only) the knob value it reports.
        enforced = view.knobs.get(knob, view.enforced_knobs.get(knob))
        if enforced is None or view.replica in {c.replica for c in claims}:
            continue  # it does not call this dependency (or is listed twice)
        demand, held = None, int(enforced)
        if view.replica in fresh:
            _, now = fresh[view.replica]
            dep = view.signals.dependencies.get(dependency)
            # In flight: the window's mean (busy time per second) or now, the larger.
            in_flight = max(dep.mean_in_flight, dep.in_flight) if dep is not None else 0.0
            demand = in_flight + now.total(names.DEPENDENCY_WAITING, dependency=dependency)
            demand += _refused_demand(dep, latency)
            # A cut limit does not end the calls already in flight above it: until they
            # finish they still hold their slots (a pooled connection each).
            held = max(held, math.ceil(now.total(names.DEPENDENCY_INFLIGHT, dependency=dependency)))
        share = state.replicas.get(view.replica, {}).get(knob)
        claims.append(Claim(view.replica, demand, share, held))
    seen = {c.replica for c in claims}
    for replica, knobs in sorted(state.replicas.items()):
        if replica not in seen and knob in knobs:
            # In the document but not read (just restarted, or it left and is still
            # listed): its share holds its slots.
            claims.append(Claim(replica, None, knobs[knob], None))
    return claims


def _fleet_latency(dependency: str, views: Sequence[View]) -> float:
    """The mean call time to ``dependency`` over the replicas read this tick, seconds
    (busy seconds per second over calls per second, Little's law); 0 when none called."""
    busy = calls = 0.0
    for view in views:
        dep = view.signals.dependencies.get(dependency)
        if dep is not None and dep.calls_per_s > 0 and math.isfinite(dep.mean_in_flight):
            busy, calls = busy + dep.mean_in_flight, calls + dep.calls_per_s
    return busy / calls if calls > 0 else 0.0


def _refused_demand(dep: DependencySignals | None, fleet_latency_s: float) -> float:
    """The slots the calls a replica's bulkhead refused would have needed (Little's law:
    refused per second x the time a call takes, its own mean or else the fleet's).

    Why: in flight + waiting understates the load once a bulkhead refuses calls (after
    its short wait, 50 ms by default, or at once with 0 slots): a replica whose share is
    far too small shows a demand near its share, however many calls it turns away, so
    demand alone would leave the shares where they are. Only refusals for a full
    bulkhead count: a timed-out call is a rejection too, but it held its slot and is
    already in the busy time."""
    if dep is None:
        return 0.0
    timed_out = dep.timeout_rate * dep.calls_per_s
    refused = dep.rejected_per_s - (timed_out if math.isfinite(timed_out) else 0.0)
    if not math.isfinite(refused) or refused <= 0:
        return 0.0
    own = dep.mean_in_flight / dep.calls_per_s if dep.calls_per_s > 0 else math.nan
    latency = own if math.isfinite(own) and own > 0 else fleet_latency_s
    return refused * latency


def _held_to_shares(
    decisions: list[Decision],
    knob: str,
    division: Division,
    claims: Sequence[Claim],
    fresh: Mapping[str, tuple[View, Scrape]],
    state: ControlState,
) -> list[Decision]:
    """Each read replica's decision for ``knob``: min(the algorithm's, its share). A
    hold publishes nothing (the document keeps what it has) unless the share is below
    it; a move is capped at the share."""
    own = {d.replica: d for d in decisions if d.knob == knob}
    everyone = own.pop("all", None)  # scope "global": one value, held per replica here
    out = [d for d in decisions if d.knob != knob]
    for claim in claims:
        if claim.demand is None:
            continue  # not read this tick: nothing is decided for it
        view, _ = fresh[claim.replica]
        decided = own.get(claim.replica, everyone)
        share = division.shares[claim.replica]
        limit = view.knobs.get(knob, view.enforced_knobs.get(knob, share))
        before = claim.share if claim.share is not None else limit
        moving = decided is not None and decided.action != HOLD
        wanted = decided.new if decided is not None and moving else before
        # A joiner (no share yet, 0 slots) has made no calls the algorithm could judge:
        # its first grant is the budget's alone.
        joiner = claim.share is None and before == 0
        value = share if joiner else min(wanted, share)
        if (
            decided is not None
            and decided.replica == claim.replica
            and value == wanted
            and not joiner
        ):
            out.append(decided)  # the share does not bind: the algorithm's decision stands
            continue
        if value == before:
            if decided is not None and moving:  # the share holds it where it is
                reason = f"{decided.reason}; held at its share: {division.reason}"
                out.append(
                    replace(
                        decided,
                        replica=claim.replica,
                        new=before,
                        action=HOLD,
                        reason=reason,
                        applied=False,
                    )
                )
            continue  # nothing to publish
        why = division.why.get(claim.replica, f"{division.reason}: {before} -> {value}")
        if decided is not None and moving and not joiner:
            reason = decided.reason if value == wanted else f"{decided.reason}; capped: {why}"
        else:
            reason = why
        applied = state.autopilot and view.obeying
        if not state.autopilot:
            reason += PAUSED
        elif not view.obeying:
            reason += NOT_APPLIED
        inputs = {
            **(dict(decided.inputs) if decided is not None else {}),
            "budget": float(division.total),
            "share": float(share),
            "demand": float(claim.demand),
        }
        action = CUT if value < before else GROW
        out.append(Decision(claim.replica, knob, before, value, action, reason, applied, inputs))
    if everyone is not None and everyone.action == HOLD:
        out.append(everyone)  # what the algorithm said for all, kept for the reasons
    return out


def _published(decisions: Sequence[Decision], claim: Claim, knob: str, division: Division) -> int:
    """What the replica's share is once this tick's decisions are published."""
    for d in decisions:
        if d.replica == claim.replica and d.knob == knob and d.applied and d.action != HOLD:
            return d.new
    if claim.share is not None:
        return claim.share
    return claim.enforced if claim.enforced is not None else division.shares[claim.replica]
