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
     "updated_at": 1767000000.0, "updated_by": "controller"}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
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

CONTROL_KEY = "surgeguard:control"
CONTROL_CHANNEL = "surgeguard:control:changed"


class ControlDocumentError(ValueError):
    """A control document that is not valid; nothing of it may be applied."""


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

    def knobs_for(self, replica: str, initial: Knobs) -> Knobs:
        """The effective knobs of one replica: its start-up values, then the global
        values, then its own overrides. Knobs the replica does not declare (another
        version of the app may) are left out; raises ``KnobError`` when a value of one
        it does declare is outside its bounds, so nothing of the document applies."""
        own = self.replicas.get(replica, {})
        return initial.with_changes(initial.known(self.knobs)).with_changes(initial.known(own))

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
            )
        except ControlDocumentError:
            raise
        except (ValueError, TypeError, AttributeError) as exc:
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


def _current_or_blank(raw: bytes | str | None) -> ControlState:
    """The stored state; an invalid stored document (written by hand) is replaced by a
    blank one at the next version, so the writer can always repair the plane."""
    if raw is None:
        return ControlState()
    try:
        return ControlState.from_json(raw)
    except ControlDocumentError:
        try:
            version = int(json.loads(raw).get("version", 0))
        except (ValueError, TypeError, AttributeError):
            version = 0
        return ControlState(version=version)


class ControlPlaneWriter:
    """Atomic read-modify-write of the control document (optimistic, WATCH/MULTI)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        writer: str = "controller",
        clock: Callable[[], float] = time.time,
        check: Callable[[ControlState], None] | None = None,
    ) -> None:
        """``check``: run on every new state before it is stored (the controller
        checks it against the knobs and modes the replicas declare)."""
        self._client = client
        self._writer = writer
        self._clock = clock
        self._check = check

    async def update(
        self, change: Callable[[ControlState], ControlState], *, attempts: int = 20
    ) -> ControlState:
        """Apply ``change`` to the current state and store it as the next version.
        ``change`` must return a valid state; it is validated again before writing."""
        from redis.exceptions import WatchError

        for _ in range(attempts):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(CONTROL_KEY)
                    raw = await pipe.get(CONTROL_KEY)
                    current = _current_or_blank(raw)
                    new = replace(
                        change(current),
                        version=current.version + 1,
                        updated_at=self._clock(),
                        updated_by=self._writer,
                    )
                    encoded = new.to_json()
                    ControlState.from_json(encoded)  # never store what a replica would refuse
                    if self._check is not None:
                        self._check(new)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(CONTROL_KEY, encoded)
                    pipe.publish(CONTROL_CHANNEL, str(new.version))
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
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
