"""Typed, read-only views of the controller API's JSON.

Parsing is lenient where the API is lean: history points carry fewer dependency
fields than the live state, and a missing number reads as NaN ("no data"), never as
zero. Times are unix seconds; latencies seconds; rates per second; shares 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from surgeguard_dashboard.budgets import Budget
from surgeguard_dashboard.health import Obedience, TickHealth
from surgeguard_dashboard.jsonread import NAN, floats, ints, mapping, num


@dataclass(frozen=True)
class Dependency:
    """One dependency in one window: utilisation is in flight / limit (0..1, may
    briefly exceed 1); error and timeout rates are shares of its calls."""

    name: str
    p50_s: float
    p99_s: float
    utilisation: float
    limit: float
    in_flight: float
    error_rate: float
    timeout_rate: float

    @classmethod
    def parse(cls, name: str, raw: Any) -> Dependency:
        d = mapping(raw)
        return cls(
            name,
            num(d.get("p50_s")),
            num(d.get("p99_s")),
            num(d.get("utilisation")),
            num(d.get("limit")),
            num(d.get("in_flight")),
            num(d.get("error_rate")),
            num(d.get("timeout_rate")),
        )


@dataclass(frozen=True)
class Signals:
    """One replica (or all of them summed) over one controller window."""

    p50_s: float = NAN
    p95_s: float = NAN
    p99_s: float = NAN
    admitted_per_s: float = NAN
    good_per_s: float = NAN
    rejected_per_s: Mapping[str, float] = field(default_factory=dict)
    error_rate: float = NAN  # every 5xx among admitted, deliberate 503s included
    # 5xx among admitted other than the deliberate 503s (a bulkhead full or timed out:
    # the service said "unavailable" on purpose); NaN from a controller that does not
    # tell them apart.
    server_error_rate: float = NAN
    in_flight: float = NAN
    peak_in_flight: float = NAN
    concurrency_limit: float = NAN
    queue_depth: float = NAN
    queue_limit: float = NAN
    queue_timeout_s: float = NAN
    queue_wait_p99_s: float = NAN
    dependencies: Mapping[str, Dependency] = field(default_factory=dict)
    jobs_pending: Mapping[str, float] = field(default_factory=dict)
    jobs_lag_s: Mapping[str, float] = field(default_factory=dict)  # oldest job's age
    jobs_dead: float = NAN  # jobs in the dead-letter stream
    # Requests held now because their client came back before its Retry-After, and
    # holds per second (a controller older than the penalty box sends neither: NaN).
    penalty_held: float = NAN
    penalty_holds_per_s: float = NAN
    # The limit the replica's inner loop enforces under concurrency_limit (requests);
    # NaN from a controller or replica without one.
    inner_limit: float = NAN
    stale: bool = False

    @classmethod
    def parse(cls, raw: Any) -> Signals:
        s = mapping(raw)
        deps = mapping(s.get("dependencies"))
        return cls(
            p50_s=num(s.get("p50_s")),
            p95_s=num(s.get("p95_s")),
            p99_s=num(s.get("p99_s")),
            admitted_per_s=num(s.get("admitted_per_s")),
            good_per_s=num(s.get("good_per_s")),
            rejected_per_s=floats(s.get("rejected_per_s")),
            error_rate=num(s.get("error_rate")),
            server_error_rate=num(s.get("server_error_rate")),
            in_flight=num(s.get("in_flight")),
            peak_in_flight=num(s.get("peak_in_flight")),
            concurrency_limit=num(s.get("concurrency_limit")),
            queue_depth=num(s.get("queue_depth")),
            queue_limit=num(s.get("queue_limit")),
            queue_timeout_s=num(s.get("queue_timeout_s")),
            queue_wait_p99_s=num(s.get("queue_wait_p99_s")),
            dependencies={str(n): Dependency.parse(str(n), d) for n, d in deps.items()},
            jobs_pending=floats(s.get("jobs_pending")),
            jobs_lag_s=floats(s.get("jobs_lag_s")),
            jobs_dead=num(s.get("jobs_dead")),
            penalty_held=num(s.get("penalty_held")),
            penalty_holds_per_s=num(s.get("penalty_holds_per_s")),
            inner_limit=num(s.get("inner_limit")),
            stale=bool(s.get("stale", False)),
        )

    @property
    def rejected_total_per_s(self) -> float:
        return sum(v for v in self.rejected_per_s.values() if not math.isnan(v))

    @property
    def server_errors_per_s(self) -> float:
        """Real 5xx per second (NaN when the controller does not separate them)."""
        return self.admitted_per_s * self.server_error_rate

    @property
    def deliberate_503_per_s(self) -> float:
        """Deliberate 503s per second: every 5xx less the real ones (NaN: unknown)."""
        share = self.error_rate - self.server_error_rate
        return NAN if math.isnan(share) else self.admitted_per_s * max(0.0, share)

    @property
    def offered_per_s(self) -> float:
        admitted = 0.0 if math.isnan(self.admitted_per_s) else self.admitted_per_s
        return admitted + self.rejected_total_per_s


@dataclass(frozen=True)
class Bottleneck:
    name: str = "none"  # a dependency, "admission", "cpu", "rejection_work" or "none"
    sentence: str = "no data yet"
    scores: Mapping[str, float] = field(default_factory=dict)  # utilisation x inflation
    since: float = NAN  # unix seconds the name took the lead (NaN: not told)
    held_s: float = NAN  # seconds it has held

    @classmethod
    def parse(cls, raw: Any) -> Bottleneck:
        b = mapping(raw)
        return cls(
            str(b.get("name", "none")),
            str(b.get("sentence", "no data yet")),
            floats(b.get("scores")),
            num(b.get("since")),
            num(b.get("held_s")),
        )


@dataclass(frozen=True)
class Decision:
    """A knob move (or a mode switch: knob ``mode.<name>``, action on/off)."""

    at: float
    replica: str
    knob: str
    old: int | None
    new: int | None
    action: str
    reason: str
    applied: bool

    @classmethod
    def parse(cls, raw: Any, at: float | None = None) -> Decision:
        d = mapping(raw)
        old, new = d.get("old"), d.get("new")
        return cls(
            num(d.get("at")) if at is None else at,
            str(d.get("replica", "")),
            str(d.get("knob", "")),
            int(old) if isinstance(old, int | float) else None,
            int(new) if isinstance(new, int | float) else None,
            str(d.get("action", "")),
            str(d.get("reason", "")),
            bool(d.get("applied", False)),
        )


@dataclass(frozen=True)
class Tick:
    """One history point: what every replica lived through in one control tick."""

    at: float
    replicas: Mapping[str, Signals]
    knobs: Mapping[str, Mapping[str, int]]  # replica -> knob -> value
    aggregate: Signals | None
    bottleneck: Bottleneck
    modes: frozenset[str]
    autopilot: bool
    decisions: tuple[Decision, ...]

    @classmethod
    def parse(cls, raw: Any) -> Tick:
        t = mapping(raw)
        at = num(t.get("at"))
        replicas = mapping(t.get("replicas"))
        aggregate = t.get("aggregate")
        return cls(
            at=at,
            replicas={
                str(r): Signals.parse(mapping(v).get("signals")) for r, v in replicas.items()
            },
            knobs={str(r): ints(mapping(v).get("knobs")) for r, v in replicas.items()},
            aggregate=Signals.parse(aggregate) if aggregate is not None else None,
            bottleneck=Bottleneck.parse(t.get("bottleneck")),
            modes=frozenset(str(m) for m in t.get("modes") or ()),
            autopilot=bool(t.get("autopilot", True)),
            decisions=tuple(Decision.parse(d, at) for d in t.get("decisions") or ()),
        )

    def signals(self, replica: str | None) -> Signals | None:
        """One replica's signals, or with ``None`` the aggregate of all of them."""
        return self.aggregate if replica is None else self.replicas.get(replica)

    def knob_values(self, replica: str | None) -> dict[str, int]:
        """One replica's knobs, or with ``None`` the sum over replicas (limits add up
        across replicas, like the aggregate signals)."""
        if replica is not None:
            return dict(self.knobs.get(replica, {}))
        total: dict[str, int] = {}
        for knobs in self.knobs.values():
            for knob, value in knobs.items():
                total[knob] = total.get(knob, 0) + value
        return total


@dataclass(frozen=True)
class Chaos:
    latency_multiplier: float = 1.0
    error_rate: float = 0.0

    @property
    def is_calm(self) -> bool:
        return self.latency_multiplier == 1.0 and self.error_rate == 0.0


@dataclass(frozen=True)
class Control:
    """The control document: what the controller (and operators) published."""

    version: int = 0
    knobs: Mapping[str, int] = field(default_factory=dict)
    replicas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    pins: frozenset[str] = frozenset()
    modes: frozenset[str] = frozenset()
    chaos: Mapping[str, Chaos] = field(default_factory=dict)
    autopilot: bool = True

    @classmethod
    def parse(cls, raw: Any) -> Control:
        c = mapping(raw)
        chaos = {
            str(dep): Chaos(num(v.get("latency_multiplier")), num(v.get("error_rate")))
            for dep, v in mapping(c.get("chaos")).items()
            if isinstance(v, Mapping)
        }
        version = c.get("version", 0)
        return cls(
            version=int(version) if isinstance(version, int | float) else 0,
            knobs=ints(c.get("knobs")),
            replicas={str(r): ints(k) for r, k in mapping(c.get("replicas")).items()},
            pins=frozenset(str(p) for p in c.get("pins") or ()),
            modes=frozenset(str(m) for m in c.get("modes") or ()),
            chaos=chaos,
            autopilot=bool(c.get("autopilot", True)),
        )


@dataclass(frozen=True)
class ReplicaState:
    target: str
    knobs: Mapping[str, int]  # what the replica enforces now (from its metrics)
    signals: Signals
    reasons: Mapping[str, str]  # knob -> why the controller last moved (or held) it
    obedience: Obedience | None = None  # None: the controller does not check it


@dataclass(frozen=True)
class State:
    """``GET /api/v1/state``: the controller right now."""

    slo_s: float
    algorithm: str
    scope: str
    tick_s: float
    last_tick_at: float
    control: Control
    replicas: Mapping[str, ReplicaState]
    aggregate: Signals | None
    bottleneck: Bottleneck
    staleness_s: Mapping[str, float]
    bounds: Mapping[str, tuple[int, int]]
    modes_available: Mapping[str, str]  # mode -> what it does
    tick: TickHealth | None = None  # None: a controller that does not report it
    last_change: Decision | None = None  # its latest move (not a hold)
    # The control document as the controller could read it: why not (empty: it could),
    # and whether ``control`` is its last good copy rather than what Redis holds now.
    control_error: str = ""
    control_stale: bool = False
    # Whether this controller holds the writers' lease, and who does (another
    # controller on the same Redis); None: a controller that does not report it.
    lease_held: bool | None = None
    lease_holder: str = ""
    budgets: Mapping[str, Budget] = field(default_factory=dict)  # dependency -> its budget

    @classmethod
    def parse(cls, raw: Any) -> State:
        s = mapping(raw)
        replicas = {
            str(r): ReplicaState(
                str(mapping(v).get("target", "")),
                ints(mapping(v).get("knobs")),
                Signals.parse(mapping(v).get("signals")),
                {str(k): str(t) for k, t in mapping(mapping(v).get("reasons")).items()},
                Obedience.parse(v),
            )
            for r, v in mapping(s.get("replicas")).items()
        }
        bounds = {
            str(k): (int(b[0]), int(b[1]))
            for k, b in mapping(s.get("bounds")).items()
            if isinstance(b, list | tuple) and len(b) == 2
        }
        aggregate = s.get("aggregate")
        change = s.get("last_change")
        return cls(
            slo_s=num(s.get("slo_p99_ms")) / 1000.0,
            algorithm=str(s.get("algorithm", "")),
            scope=str(s.get("scope", "")),
            tick_s=num(s.get("tick_s")),
            last_tick_at=num(s.get("last_tick_at")),
            control=Control.parse(s.get("control")),
            replicas=replicas,
            aggregate=Signals.parse(aggregate) if aggregate is not None else None,
            bottleneck=Bottleneck.parse(s.get("bottleneck")),
            staleness_s=floats(s.get("staleness_s")),
            bounds=bounds,
            modes_available={str(k): str(v) for k, v in mapping(s.get("modes_available")).items()},
            tick=TickHealth.parse(s.get("tick")),
            last_change=Decision.parse(change) if isinstance(change, Mapping) else None,
            control_error=str(s.get("control_error") or ""),
            control_stale=s.get("control_stale") is True,
            lease_held=_lease_held(s.get("lease")),
            lease_holder=str(mapping(s.get("lease")).get("holder") or ""),
            budgets=Budget.parse_all(s.get("budgets")),
        )

    def signals(self, replica: str | None) -> Signals | None:
        """One replica's signals, or with ``None`` the aggregate."""
        if replica is None:
            return self.aggregate
        view = self.replicas.get(replica)
        return view.signals if view is not None else None

    def knob_value(self, knob: str, replica: str | None) -> int | None:
        """What a knob is now: the replica's own value, else the published one, else
        the first replica's (``None``: nothing known)."""
        view = self.replicas.get(replica) if replica is not None else None
        if view is not None and knob in view.knobs:
            return view.knobs[knob]
        if knob in self.control.knobs:
            return self.control.knobs[knob]
        return next((v.knobs[knob] for v in self.replicas.values() if knob in v.knobs), None)


@dataclass(frozen=True)
class AuditEntry:
    """One operator write: who (the operator's name), what, old -> new, and why."""

    at: float
    who: str
    what: str
    old: Any
    new: Any
    reason: str

    @classmethod
    def parse(cls, raw: Any) -> AuditEntry:
        a = mapping(raw)
        return cls(
            num(a.get("at")),
            str(a.get("who", "")),
            str(a.get("what", "")),
            a.get("old"),
            a.get("new"),
            str(a.get("reason", "")),
        )


def _lease_held(raw: Any) -> bool | None:
    held = mapping(raw).get("held")
    return held if isinstance(held, bool) else None
