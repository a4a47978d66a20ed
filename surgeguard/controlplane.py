"""The control plane's contract in Redis: one versioned JSON document plus a notice.

Key ``surgeguard:control`` holds the document; every write bumps ``version`` and
publishes the new version on ``surgeguard:control:changed``. The controller is its
only writer (``ControlPlaneWriter``); replicas read it (``surgeguard.knob_watcher``).

Document (all parts optional). Knobs absent from it keep each replica's start-up
value. Modes are different: once any document exists, its ``modes`` list is the
truth (so an operator can switch off a mode a replica was started with).
    {"version": 7,
     "knobs": {"concurrency_limit": 40, "bulkhead.db": 12, ...},
     "replicas": {"<replica id>": {"knobs": {...}}},   # per-replica overrides
     "modes": ["shed_sheddable", ...],
     "chaos": {"db": {"latency_multiplier": 5.0, "error_rate": 0.0}},
     "pins": ["queue_limit"],
     "autopilot": true,
     "updated_at": 1767000000.0, "updated_by": "controller",
     "epoch": "9f2c41d07a3b5e68",
     "restored_from": {"epoch": "0c1d2e3f4a5b6c7d", "version": 6}}   # or null

Versions never go backwards, even when Redis loses its data (a restart without its
files, ``FLUSHALL``, an eviction, a failover to an empty replica). The rules:

- ``epoch`` names one history of the plane: a random id the writer chooses when it
  writes a plane from nothing (no document, or one it cannot read). A document written
  on top of another keeps its epoch and is its version + 1.
- A replica applies a document only when it is newer than the one it applies: a
  higher ``version`` (whatever the epoch), or, from another epoch, one whose
  ``restored_from`` is exactly the epoch and version the replica applies (the writer
  says it rebuilt the plane from that document). A document that vanished, went
  backwards or repeats the version is not applied: the replica keeps what it applied
  and says so (``KnobWatcher.last_error``). Before it has applied any document a
  replica applies whatever it reads (its start-up values when there is none).
- A writer that finds the document gone, unreadable, or older than what it knew
  (``recall``) rebuilds it from what it knew, in a new epoch with ``restored_from`` set,
  at a version above the stored one, the recalled one and ``floor`` (the highest
  version any replica reports it applies), and lets ``on_restore`` add its audit
  entry to the same transaction (both land or neither), then logs it. So the
  controller restores operator intent (modes, pins, autopilot) and the replicas, which
  kept enforcing it meanwhile, accept the restored document as newer.
- ``fence``: the controller writes only while it holds the lease (the key holds its
  id); the lease is checked and renewed in the same transaction as the write, so a
  controller that lost it writes nothing (``NotHolder``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from surgeguard.chaos import Chaos
from surgeguard.declaration import DEPENDENCY_NAME
from surgeguard.knobs import (
    BULKHEAD_MINIMUM,
    DOOR_KNOB_SPECS,
    KnobError,
    Knobs,
    KnobSpec,
    bulkhead_spec,
    dependency_of,
    knob_spec,
)
from surgeguard.modes import MODE_NAME, ModeSpec, parse_modes

if TYPE_CHECKING:  # redis-py is the control plane's extra; the document needs none
    import redis.asyncio as aioredis

log = logging.getLogger("surgeguard.control")

CONTROL_KEY = "surgeguard:control"
CONTROL_CHANNEL = "surgeguard:control:changed"


class ControlDocumentError(ValueError):
    """A control document that is not valid; nothing of it may be applied."""


class NotHolder(RuntimeError):
    """A write refused because another writer holds the lease (``holder``: its id)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"another controller holds the lease: {holder}")
        self.holder = holder


@dataclass(frozen=True)
class Fence:
    """The lease a writer must hold to write: ``key`` holds ``holder`` (this writer's
    id) for ``ttl_ms`` milliseconds after each renewal."""

    key: str
    holder: str
    ttl_ms: int


def new_epoch() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class ControlState:
    version: int = 0
    knobs: Mapping[str, int] = field(default_factory=dict)
    replicas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    modes: frozenset[str] = frozenset()
    chaos: Mapping[str, Chaos] = field(default_factory=dict)
    pins: frozenset[str] = frozenset()
    autopilot: bool = True  # False: the controller only says what it would have done
    updated_at: float = 0.0
    updated_by: str = ""
    epoch: str = ""  # this history of the plane ("" for a document written before epochs)
    restored_from: tuple[str, int] | None = None  # (epoch, version) it was rebuilt from

    def newer_than(self, epoch: str, version: int) -> bool:
        """Whether a replica that applies ``version`` of ``epoch`` should apply this
        document (the module's rules; ``version`` -1: nothing applied yet)."""
        if version < 0:
            return True
        if self.version > version:
            return True
        return self.epoch != epoch and self.restored_from == (epoch, version)

    def knobs_for(self, replica: str, initial: Knobs) -> Knobs:
        """The effective knobs of one replica: its start-up values, then the global
        values, then its own overrides. Knobs the replica does not declare (another
        version of the app may) are left out; raises ``KnobError`` when a value of one
        it does declare is outside its bounds, so nothing of the document applies.

        A budgeted knob (``KnobSpec.budgeted``) is a share the controller hands out: a
        replica without a value of its own (it just joined, or the document predates
        it) runs at 0 slots (its calls to that dependency refused at once) until it is
        granted one, never at a global, start-up or minimum value: the controller keeps
        no slots in reserve, so any slot taken before a grant could take the budget
        past its total. The cost: a joiner waits about one to three ticks for its first
        slots. A pinned value is the operator's and still applies to every replica."""
        own = self.replicas.get(replica, {})
        waiting = {
            name: 0
            for name, spec in initial.specs.items()
            if spec.budgeted and name not in own and name not in self.pins
        }
        knobs = initial.with_changes(initial.known(self.knobs)).with_changes(waiting)
        return knobs.with_changes(initial.known(own))

    def modes_known(self, known: Mapping[str, ModeSpec]) -> frozenset[str]:
        """The document's modes that a replica knowing ``known`` can act on."""
        return frozenset(m for m in self.modes if m in known)

    def check(self, specs: Mapping[str, KnobSpec], modes: Mapping[str, ModeSpec]) -> None:
        """Every knob, pin and mode against what the replicas declare (the writer's
        check: a replica leaves out names it does not know, so a typo would be silent
        there). Raises ``ControlDocumentError`` naming the first problem."""
        try:
            for values in (self.knobs, *self.replicas.values()):
                for name, value in values.items():
                    knob_spec(name, specs).check(value)
            for pin in self.pins:
                knob_spec(pin, specs)
            parse_modes(self.modes, modes)
        except (KnobError, ValueError) as exc:
            raise ControlDocumentError(str(exc)) from None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "knobs": dict(self.knobs),
                "replicas": {r: {"knobs": dict(k)} for r, k in self.replicas.items()},
                "modes": sorted(self.modes),
                "chaos": {
                    d: {"latency_multiplier": c.latency_multiplier, "error_rate": c.error_rate}
                    for d, c in self.chaos.items()
                },
                "pins": sorted(self.pins),
                "autopilot": self.autopilot,
                "updated_at": self.updated_at,
                "updated_by": self.updated_by,
                "epoch": self.epoch,
                "restored_from": (
                    None
                    if self.restored_from is None
                    else {"epoch": self.restored_from[0], "version": self.restored_from[1]}
                ),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ControlState:
        """Parse a whole document and check it as far as any replica would: the door's
        knobs within their bounds, bulkheads within the widest bulkhead bounds, names
        that can be knobs and modes (raises ``ControlDocumentError``). What one app
        declares is its replicas' to check (``knobs_for``) and the writer's (``check``)."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ControlDocumentError("control document must be a JSON object")
            knobs = _knob_values(doc.get("knobs", {}), "knobs")
            replicas = {
                str(name): _knob_values(part.get("knobs", {}), f"replicas.{name}.knobs")
                for name, part in dict(doc.get("replicas", {})).items()
            }
            chaos: dict[str, Chaos] = {}
            restored = doc.get("restored_from")
            if restored is not None and not isinstance(restored, dict):
                raise ControlDocumentError("restored_from must be an object or null")
            for dep, values in dict(doc.get("chaos", {})).items():
                chaos[str(dep)] = Chaos(
                    float(values.get("latency_multiplier", 1.0)),
                    float(values.get("error_rate", 0.0)),
                )
            return cls(
                version=int(doc.get("version", 0)),
                knobs=knobs,
                replicas=replicas,
                modes=_mode_names(doc.get("modes", [])),
                chaos=chaos,
                pins=frozenset(_names(doc.get("pins", []), "pins")),
                autopilot=bool(doc.get("autopilot", True)),
                updated_at=float(doc.get("updated_at", 0.0)),
                updated_by=str(doc.get("updated_by", "")),
                epoch=str(doc.get("epoch", "")),
                restored_from=(
                    None if restored is None else (str(restored["epoch"]), int(restored["version"]))
                ),
            )
        except ControlDocumentError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ControlDocumentError(f"invalid control document: {exc}") from None


def _knob_values(values: Any, where: str) -> dict[str, int]:
    if not isinstance(values, dict):
        raise ControlDocumentError(f"{where} must be an object of knob values")
    for name, value in values.items():
        _possible_knob(str(name)).check(value)
    return {str(name): value for name, value in values.items()}


def _possible_knob(name: str) -> KnobSpec:
    """The widest spec ``name`` can have in any replica: the door's knobs are the same
    everywhere; a bulkhead's declared range lies within the bulkhead bounds."""
    if name in DOOR_KNOB_SPECS:
        return DOOR_KNOB_SPECS[name]
    dependency = dependency_of(name)
    if dependency is not None and DEPENDENCY_NAME.match(dependency):
        return bulkhead_spec(dependency, BULKHEAD_MINIMUM)
    raise KnobError(
        f"unknown knob {name!r}: a knob is one of {', '.join(DOOR_KNOB_SPECS)} "
        "or bulkhead.<dependency>"
    )


def _names(values: Any, where: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ControlDocumentError(f"{where} must be a list of names")
    return list(values)


def _mode_names(values: Any) -> frozenset[str]:
    names = _names(values, "modes")
    for name in names:
        if not MODE_NAME.match(name):
            raise ControlDocumentError(f"modes: {name!r} is not a mode name")
    return frozenset(names)


async def read_state(client: aioredis.Redis) -> ControlState:
    """The current document (an empty state at version 0 when none was written)."""
    raw = await client.get(CONTROL_KEY)
    return ControlState() if raw is None else ControlState.from_json(raw)


def _stored_version(raw: bytes | str) -> int:
    """The version an unreadable document claims, if any (0 when it claims none)."""
    try:
        return max(0, int(json.loads(raw).get("version", 0)))
    except (ValueError, TypeError, AttributeError):
        return 0


# on_restore(pipe, restored, why): queue more commands in the restoring write's transaction.
OnRestore = Callable[[Any, ControlState, str], None]


@dataclass(frozen=True)
class Also:
    """Commands that land in the same transaction as a write, or not at all (the
    controller's audit entry). ``keys`` are watched with the document; ``ready(pipe)``
    is awaited before the transaction (it may read them; raising writes nothing);
    ``queue(pipe, before, after)`` adds the commands, given the state the write
    started from and the one it stores."""

    keys: tuple[str, ...]
    ready: Callable[[Any], Awaitable[None]]
    queue: Callable[[Any, ControlState, ControlState], None]


class ControlPlaneWriter:
    """Atomic read-modify-write of the control document (optimistic, WATCH/MULTI)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        writer: str = "controller",
        clock: Callable[[], float] = time.time,
        check: Callable[[ControlState], None] | None = None,
        recall: Callable[[], ControlState] | None = None,
        floor: Callable[[], int] | None = None,
        fence: Fence | None = None,
        on_restore: OnRestore | None = None,
    ) -> None:
        """``check``: run on every new state before it is stored (the controller
        checks it against the knobs and modes the replicas declare). ``recall``: the
        last document the writer knew, to rebuild the plane from when the stored one
        is gone, unreadable or older; ``floor``: the highest version any replica
        applies (every write goes above it); ``fence``: the lease to hold while
        writing; ``on_restore(pipe, state, why)``: queues commands (the audit entry)
        in the transaction of a write that rebuilds the plane (the module's rules)."""
        self._client = client
        self._writer = writer
        self._clock = clock
        self._check = check
        self._recall = recall
        self._floor = floor
        self._fence = fence
        self._on_restore = on_restore
        self.last_written = ControlState()  # the last document this writer stored

    def base(self, raw: bytes | str | None) -> tuple[ControlState, str]:
        """What a write starts from, given the stored ``raw`` document, and why it is a
        restore ("" when it is not). An invalid stored document (written by hand) or a
        missing one is replaced, so the writer can always repair the plane."""
        known = self._recall() if self._recall is not None else ControlState()
        stored_version, why = 0, ""
        if raw is None:
            why = "the control document was gone from Redis"
        else:
            try:
                current = ControlState.from_json(raw)
            except ControlDocumentError as exc:
                stored_version, why = (
                    _stored_version(raw),
                    f"the stored document was invalid ({exc})",
                )
            else:
                if current.version >= known.version:
                    return current, ""
                stored_version = current.version
                why = f"the stored document (v{current.version}) was older than v{known.version}"
        if known.version <= 0:  # nothing to restore: a plane from nothing
            return ControlState(version=stored_version, epoch=new_epoch()), ""
        restored = replace(
            known,
            version=max(known.version, stored_version),
            epoch=new_epoch(),
            restored_from=(known.epoch, known.version),
        )
        return restored, why

    async def current(self) -> ControlState:
        """The document a write would start from now (the stored one, else what the
        writer would restore, else a blank one)."""
        return self.base(await self._client.get(CONTROL_KEY))[0]

    async def update(
        self,
        change: Callable[[ControlState], ControlState],
        *,
        attempts: int = 20,
        also: Also | None = None,
    ) -> ControlState:
        """Apply ``change`` to the current state and store it as the next version.
        ``change`` must return a valid state; it is validated again before writing.
        ``also``: more commands in the same transaction (see ``Also``).
        Raises ``NotHolder`` when ``fence`` names a lease another writer holds."""
        from redis.exceptions import WatchError

        for _ in range(attempts):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    fence = self._fence
                    extra = also.keys if also is not None else ()
                    await pipe.watch(CONTROL_KEY, *([fence.key] if fence else []), *extra)
                    if fence is not None:
                        holder = await pipe.get(fence.key)
                        if isinstance(holder, bytes):
                            holder = holder.decode()
                        if holder is not None and holder != fence.holder:
                            raise NotHolder(str(holder))
                    raw = await pipe.get(CONTROL_KEY)
                    current, restoring = self.base(raw)
                    floor = self._floor() if self._floor is not None else 0
                    new = replace(
                        change(current),
                        version=max(current.version, floor) + 1,
                        updated_at=self._clock(),
                        updated_by=self._writer,
                        epoch=current.epoch or new_epoch(),
                        restored_from=current.restored_from,
                    )
                    encoded = new.to_json()
                    ControlState.from_json(encoded)  # never store what a replica would refuse
                    if self._check is not None:
                        self._check(new)
                    if also is not None:
                        await also.ready(pipe)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if fence is not None:
                        pipe.set(fence.key, fence.holder, px=fence.ttl_ms)
                    pipe.set(CONTROL_KEY, encoded)
                    pipe.publish(CONTROL_CHANNEL, str(new.version))
                    if restoring and self._on_restore is not None:
                        self._on_restore(pipe, new, restoring)
                    if also is not None:
                        also.queue(pipe, current, new)
                    await pipe.execute()
                except WatchError:
                    continue
            self.last_written = new
            if restoring:
                epoch, version = new.restored_from or ("?", "?")
                log.warning(
                    "%s: restored the control document as v%d (epoch %s) from v%s (epoch %s)",
                    restoring,
                    new.version,
                    new.epoch,
                    version,
                    epoch,
                )
            return new
        raise RuntimeError(f"control document kept changing; gave up after {attempts} attempts")

    async def set_knobs(
        self, values: Mapping[str, int], replica: str | None = None
    ) -> ControlState:
        def change(state: ControlState) -> ControlState:
            if replica is None:
                return replace(state, knobs={**state.knobs, **values})
            replicas = dict(state.replicas)
            replicas[replica] = {**replicas.get(replica, {}), **values}
            return replace(state, replicas=replicas)

        return await self.update(change)

    async def set_modes(self, modes: frozenset[str]) -> ControlState:
        return await self.update(lambda s: replace(s, modes=modes))

    async def set_chaos(self, dependency: str, chaos: Chaos) -> ControlState:
        """Chaos for one dependency (the caller checks that some replica has it)."""

        def change(state: ControlState) -> ControlState:
            updated = dict(state.chaos)
            if chaos.is_calm:
                updated.pop(dependency, None)
            else:
                updated[dependency] = chaos
            return replace(state, chaos=updated)

        return await self.update(change)
