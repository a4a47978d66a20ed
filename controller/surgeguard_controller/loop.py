"""The control loop: read signals, decide, publish knobs, remember why.

Each tick (``tick_s`` seconds): read every replica through the signal source, turn
two consecutive reads into ``Signals``, let the ``Decider`` decide per replica (or
once for all, ``scope="global"``), publish the applied changes as one new version of
the control document, and record decisions and a history point in Redis.

It also knows when it is not obeyed or not working (issue 16): a replica whose applied
control-document version does not follow the published one is flagged
(``surgeguard_controller.replica_views``) and its moves are recorded as not applied; a
tick that fails is counted with its error (``surgeguard_controller.health``); and the
bottleneck's name holds still (``surgeguard_controller.bottleneck.hold_name``).

It survives the loss of Redis's data (issue 13): the control document as it knows it,
rebuilt when Redis lost it, and the lease that lets it write are
``surgeguard_controller.control_document``'s. Only the holder of the lease writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from surgeguard.controlplane import ControlState, NotHolder
from surgeguard_controller.bottleneck import Bottleneck, Held, held_json, hold_name
from surgeguard_controller.budgeting import Budgets
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.control_document import ControlDocument
from surgeguard_controller.decide import (
    ControllerConfig,
    Decider,
    Decision,
    ModeDecision,
)
from surgeguard_controller.health import TickHealth, error_text, readiness
from surgeguard_controller.lease import Lease
from surgeguard_controller.metrics import ControllerMetrics
from surgeguard_controller.records import compact, jsonable
from surgeguard_controller.replica_views import ReplicaView, ReplicaViews, Window
from surgeguard_controller.sensing.scrape import Scrape
from surgeguard_controller.sensing.signals import Signals
from surgeguard_controller.sensing.sources import SignalSource
from surgeguard_controller.store import RecordStore

log = logging.getLogger("controller")

SCOPES = ("replica", "global")


class Controller:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        source: SignalSource,
        config: ControllerConfig | None = None,
        *,
        scope: str = "replica",
        tick_s: float = 1.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        window_s: float | None = None,
        decider: Decider | None = None,
        ready_grace_s: float | None = None,
        lease: Lease | None = None,
    ) -> None:
        """``window_s``: signals cover the last ``window_s`` seconds (default: one
        second or one tick, whichever is longer), so a quantile rests on enough
        requests even when ticks are short; decisions still come every tick.
        ``decider``: decides each tick (default: a ``Decider`` of ``config``).
        ``ready_grace_s``: how long after start-up the controller counts as ready
        without a successful tick, seconds (default: 5 s or 3 ticks, the longer).
        ``lease``: what lets it write (default: one lasting three ticks)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not 0.05 <= tick_s <= 60:
            raise ValueError(f"tick_s must be in [0.05, 60] seconds, got {tick_s}")
        self.config = config or (decider.config if decider is not None else ControllerConfig())
        self.decider = decider or Decider(self.config)
        self.source = source
        self.scope = scope
        self.tick_s = tick_s
        self.redis = redis_client
        self.store = RecordStore(redis_client)
        self.lease = lease or Lease(redis_client, ttl_ms=max(1, round(3 * tick_s * 1000)))
        self.registry = registry or CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry)
        self.budgets = Budgets(self.metrics)  # shared dependencies' budgets (issue 15)
        self._clock, self.wall = clock, wall
        self.window_s = max(tick_s, 1.0) if window_s is None else window_s
        if self.window_s < tick_s:
            raise ValueError(f"window_s must be >= tick_s ({tick_s} s), got {self.window_s}")
        self.views = ReplicaViews(
            self.config,
            self.metrics,
            reads_kept=max(2, round(self.window_s / tick_s) + 1),
            wall=wall,
        )
        self.document = ControlDocument(
            redis_client,
            self.lease,
            self.views,
            self.store,
            # Nothing is stored that names a knob or mode no replica declares.
            check=lambda state: self.catalogue.check(state),
            wall=wall,
        )
        self.writer = self.document.writer  # operators' writes go through it too
        self.held: Held | None = None  # the bottleneck as named, held still
        self.bottleneck: dict[str, Any] = held_json(None, self.config.bottleneck_hold_ticks)
        self.ticks = 0
        self.last_tick_at = math.nan  # unix seconds
        self.health = TickHealth()
        self.last_change: dict[str, Any] | None = None  # the latest move, as recorded
        self.started = clock()
        self.ready_grace_s = max(5.0, 3 * tick_s) if ready_grace_s is None else ready_grace_s
        self._tick_errors: list[str] = []
        self._targets: set[str] = set()  # the targets read last tick
        self._joined: set[str] = set()  # announced targets said to have joined
        self._leaving: set[str] = set()  # replicas that left, still in the document

    @property
    def replicas(self) -> dict[str, ReplicaView]:
        """Every replica read and not forgotten, by target URL."""
        return self.views.by_target

    @property
    def aggregate(self) -> Signals | None:
        """All replicas' windows of the last tick together (None: none was read anew)."""
        return self.views.aggregate

    @property
    def control(self) -> ControlState:
        """The control document decided from this tick (the last good one when the
        stored one is unreadable)."""
        return self.document.control

    @property
    def known(self) -> ControlState:
        """The newest document this controller read or wrote (an operator's write too)."""
        return self.document.known

    @property
    def latest_reasons(self) -> dict[str, dict[str, str]]:
        """Replica -> knob -> the reason of its latest decision."""
        return self.views.reasons

    # -- one tick -----------------------------------------------------------------------

    async def tick(self) -> list[Decision]:
        """One tick. It fails (counted in ``health``, with its error) when it raises,
        which it passes on, or when the control plane cannot be read, written or
        recorded to (then it decides nothing, or records its moves as not applied)."""
        self._tick_errors = []
        try:
            decisions = await self._tick()
        except Exception as exc:
            self._tick_failed(error_text(exc))
            raise
        if self._tick_errors:
            self._tick_failed("; ".join(self._tick_errors))
        else:
            if not self.health.ok:
                log.info(
                    "control ticks work again after %d failures",
                    self.health.consecutive_failures,
                )
            self.health = self.health.succeeded(self.wall())
        return decisions

    def _tick_failed(self, error: str) -> None:
        if error != self.health.last_error or self.health.ok:
            log.error("control tick failed: %s", error)  # once per new error, not per tick
        self.health = self.health.failed(error, self.wall())
        self.metrics.tick_failures.inc()

    async def _tick(self) -> list[Decision]:
        started = self._clock()
        scrapes = await self.source.read()
        if any(scrape is not None for scrape in scrapes.values()):
            self.config.learn(Catalogue.from_scrapes(scrapes.values()))
        try:
            await self.document.sync()
        except RedisError as exc:
            self._tick_errors.append(f"control plane unreachable, deciding nothing: {exc}")
            return []
        windows = self.views.update(scrapes, self.control.version)
        if (error := await self.document.restore()) is not None:
            self._tick_errors.append(error)
        await self._follow_fleet(scrapes)
        decisions, modes = self._decide(windows, started)
        decisions, modes = await self._publish(decisions, modes)
        await self._record(decisions, modes, write=self.lease.held)
        self.metrics.tick.observe(self._clock() - started)
        self.ticks += 1
        return decisions

    # -- replicas that come and go (issue 15) ------------------------------------------

    async def _follow_fleet(self, scrapes: Mapping[str, Scrape | None]) -> None:
        """Forget each replica whose target is no longer read (an announced one that
        left): its view, reads, series and its own knobs in the document (its share
        goes back to the pool), with a record saying why; record the joins."""
        found, present = self.source.found, set(scrapes)
        records: list[dict[str, Any]] = []
        for target in sorted(self._targets - present):
            view = self.views.forget(target)
            self._joined.discard(target)
            if view is None:
                continue
            self._leaving.add(view.replica)
            reason = f"replica {view.replica} left ({found.why_gone(target)}): forgotten"
            log.info("%s", reason)
            records.append({"replica": view.replica, "action": "forget", "reason": reason})
        self._targets = present
        for target, view in self.replicas.items():
            if target in found.announced and target not in self._joined:
                self._joined.add(target)
                self._leaving.discard(view.replica)
                reason = f"replica {view.replica} joined (announced at {target}): tuned"
                log.info("%s", reason)
                records.append({"replica": view.replica, "action": "join", "reason": reason})
        self.metrics.replicas.set(len(self.replicas))
        await self._forget_in_document()
        if records and self.lease.held:
            at = self.wall()
            try:
                await self.store.add_decisions(
                    [{"at": at, "knob": "replica", "applied": True, **r} for r in records]
                )
            except RedisError as exc:
                self._tick_errors.append(f"could not record replicas joining or leaving: {exc}")

    async def _forget_in_document(self) -> None:
        """Drop the replicas that left from the document's ``replicas`` map."""
        tuned = {v.replica for v in self.replicas.values()}
        self._leaving -= tuned | (self._leaving - set(self.control.replicas))
        gone = set(self._leaving)
        if not gone or not self.lease.held or self.document.error is not None:
            return

        def drop(state: ControlState) -> ControlState:
            return replace(
                state, replicas={r: k for r, k in state.replicas.items() if r not in gone}
            )

        try:
            await self.document.write(drop)
        except NotHolder:
            return
        except RedisError as exc:
            self._tick_errors.append(f"could not forget {', '.join(sorted(gone))}: {exc}")
            return
        self._leaving -= gone

    def state_json(self) -> dict[str, object]:
        """What ``GET /state`` adds about the document and the lease."""
        return {
            **self.document.json(),
            "budgets": self.budgets.json(),
            # Who is tuned, who is ignored and why, and each target's last read error.
            "discovery": {**self.source.found.json(), "errors": dict(self.source.last_error)},
        }

    @property
    def catalogue(self) -> Catalogue:
        """The knobs, bounds and modes the replicas declare, as last read."""
        return self.config.catalogue

    async def learn_if_unknown(
        self, *, knob: str | None = None, mode: str | None = None, dependency: str | None = None
    ) -> None:
        """Read the replicas now when an operator names something the last tick did not
        see (the controller just started, or a new version was just deployed)."""
        known = self.catalogue
        if (
            (knob is not None and knob not in known.knob_specs)
            or (mode is not None and mode not in known.modes)
            or (dependency is not None and dependency not in known.dependencies)
        ):
            scrapes = await self.source.read()
            if any(scrape is not None for scrape in scrapes.values()):
                self.config.learn(Catalogue.from_scrapes(scrapes.values()))

    def ready(self) -> str | None:
        """Why the controller is not ready (``/readyz`` 503), or None when it is."""
        return readiness(
            self.health, running_s=self._clock() - self.started, grace_s=self.ready_grace_s
        )

    def _decide(
        self, windows: list[Window], now: float
    ) -> tuple[list[Decision], list[ModeDecision]]:
        state = self.control
        decisions: list[Decision] = []
        modes: list[ModeDecision] = []
        if self.scope == "global" and self.aggregate is not None and windows:
            per_replica = _per_replica(self.aggregate, len(windows))
            result = self.decider.decide(
                per_replica,
                windows[0][0].knobs,
                now=now,
                pins=state.pins,
                modes=state.modes,
                autopilot=state.autopilot,
                # One value for all: applied while at least one replica applies it.
                obeyed=any(view.obeying for view, _, _ in windows),
            )
            decisions.extend(result.decisions)
            modes.extend(result.modes)
            self._name(result.bottleneck)
        else:
            for view, _, _ in windows:
                result = self.decider.decide(
                    view.signals,
                    view.knobs,
                    now=now,
                    pins=state.pins,
                    modes=state.modes,
                    autopilot=state.autopilot,
                    obeyed=view.obeying,
                )
                decisions.extend(result.decisions)
                modes.extend(result.modes)
            if self.aggregate is not None:
                self._name(
                    self.decider.bottleneck(
                        replace(self.aggregate, replica=windows[0][0].replica)
                        if len(windows) == 1
                        else self.aggregate
                    )
                )
        # A budgeted bulkhead: each replica's held to its share of the total (issue 15).
        decisions = self.budgets.apply(
            decisions, windows, self.replicas.values(), state, self.config
        )
        for d in decisions:
            self.latest_reasons.setdefault(d.replica, {})[d.knob] = d.reason
        return decisions, modes

    def _name(self, pick: Bottleneck) -> None:
        """This tick's bottleneck ``pick``, held still (``hold_name``)."""
        hold_ticks = self.config.bottleneck_hold_ticks
        self.held = hold_name(self.held, pick, now=self.wall(), hold_ticks=hold_ticks)
        self.bottleneck = held_json(self.held, hold_ticks)

    async def _publish(
        self, decisions: list[Decision], modes: list[ModeDecision]
    ) -> tuple[list[Decision], list[ModeDecision]]:
        """Publish the applied moves; when that fails, they are returned as not applied
        (and mode switches as not made)."""
        changes = [d for d in decisions if d.applied]
        if not changes and not modes:
            return decisions, modes
        if self.document.error is not None or not self.lease.held:
            why = (
                " (the stored control document is invalid: not applied)"
                if self.document.error is not None
                else f" (controller {self.lease.holder} holds the lease: not applied)"
            )
            return _not_applied(decisions, why), []
        scope_global = self.scope == "global"

        def change(state: ControlState) -> ControlState:
            knobs = dict(state.knobs)
            replicas = {r: dict(k) for r, k in state.replicas.items()}
            for d in changes:
                if d.knob in state.pins:
                    continue  # pinned since we read the state: the operator wins
                if scope_global and d.replica == "all":  # a budget's share is per replica
                    knobs[d.knob] = d.new
                else:
                    replicas.setdefault(d.replica, {})[d.knob] = d.new
            active = set(state.modes)
            for m in modes:
                (active.add if m.active else active.discard)(m.mode)
            return replace(state, knobs=knobs, replicas=replicas, modes=frozenset(active))

        try:
            await self.document.write(change)
        except NotHolder as exc:
            return _not_applied(
                decisions, f" (controller {exc.holder} holds the lease: not applied)"
            ), []
        except RedisError as exc:
            self._tick_errors.append(f"could not publish knobs: {exc}")
            return _not_applied(decisions, " (publishing failed: not applied)"), []
        return decisions, modes

    async def _record(
        self, decisions: list[Decision], modes: list[ModeDecision], *, write: bool = True
    ) -> None:
        """Count and remember the tick; ``write``: store it in Redis too (only the
        lease holder writes)."""
        at = self.wall()
        self.last_tick_at = at
        moves = [d for d in decisions if d.action != "hold"]
        for d in moves:
            self.metrics.decisions.labels(d.knob, d.action, str(d.applied).lower()).inc()
        for m in modes:
            self.metrics.mode_switches.labels(m.mode, str(m.active).lower()).inc()
        records: list[Mapping[str, Any]] = [{"at": at, **jsonable(d)} for d in moves]
        switches: list[Mapping[str, Any]] = [
            {
                "at": at,
                "knob": f"mode.{m.mode}",
                "action": "on" if m.active else "off",
                "reason": m.reason,
                "applied": True,
            }
            for m in modes
        ]
        records += switches
        # What the controller did last: a mode switch first, else an applied move, else
        # one it could not apply.
        latest = [*switches, *(r for r in records if r.get("applied")), *records]
        if latest:
            last = latest[0]
            self.last_change = {
                "replica": last.get("replica", "all"),  # a mode is every replica's
                **{k: last.get(k) for k in ("knob", "old", "new", "action", "reason", "applied")},
                "at": at,
            }
        history = {
            "at": at,
            "replicas": {
                v.replica: {
                    "signals": compact(v.signals),
                    "knobs": v.knobs,
                    "obeying": v.obeying,
                }
                for v in self.replicas.values()
            },
            "aggregate": compact(self.aggregate),
            "bottleneck": self.bottleneck,
            "modes": sorted(self.control.modes),
            "autopilot": self.control.autopilot,
            "decisions": [jsonable(d) for d in moves],
        }
        if not write:
            return
        try:
            await self.store.add_decisions(records)
            await self.store.add_history(history)
        except RedisError as exc:
            self._tick_errors.append(f"could not record the tick: {exc}")

    # -- running ------------------------------------------------------------------------

    def staleness(self) -> dict[str, float]:
        """Seconds since each replica was last read successfully."""
        return self.views.staleness(self._clock())

    async def run(self) -> None:
        """Tick every ``tick_s`` seconds until cancelled; a failed tick never stops it."""
        while True:
            started = self._clock()
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the loop (``tick`` counted it)
                if self.health.consecutive_failures == 1:
                    log.exception("the failed tick's traceback")
            await asyncio.sleep(max(0.0, self.tick_s - (self._clock() - started)))


def _not_applied(decisions: list[Decision], why: str) -> list[Decision]:
    return [replace(d, applied=False, reason=d.reason + why) if d.applied else d for d in decisions]


def _per_replica(total: Signals, replicas: int) -> Signals:
    """The aggregate as one average replica (for one value for all replicas)."""
    n = float(max(1, replicas))
    return replace(
        total,
        replica="all",
        peak_in_flight=total.peak_in_flight / n,
        in_flight=total.in_flight / n,
        mean_in_flight=total.mean_in_flight / n,
        concurrency_limit=total.concurrency_limit / n,
        queue_limit=total.queue_limit / n,
        queue_depth=total.queue_depth / n,
        queue_timeout_s=total.queue_timeout_s / n,
        admitted_per_s=total.admitted_per_s / n,
        penalty_held=total.penalty_held / n,
        penalty_holds_per_s=total.penalty_holds_per_s / n,
    )
