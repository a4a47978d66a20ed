"""Operator writes as plain functions: validate, write, audit.

Every operator write (a mode, a knob and its pin, the autopilot, chaos on a dependency)
takes the same three steps, and each is a function a test can call without HTTP:

1. validate: names against what the replicas declare (the ``Catalogue``, handed in),
   values against their bounds. A ``WriteError`` says what is wrong and what is allowed
   (``status`` 404: an unknown name; 422: a bad value), and nothing has changed;
2. write: one pure change of the control document (``with_mode``, ``with_knob``,
   ``without_pin``, ``with_autopilot``), stored as its next version by the writer;
3. audit: what, old -> new, when, who (the operator's name) and why, in the audit
   trail, in the same Redis transaction as the write (``write_audited``): a change
   is never stored unaudited, nor an entry for a change that was not made.

``set_mode``, ``set_knob``, ``unpin``, ``set_autopilot`` and ``set_chaos`` take the
steps in order. The HTTP routes (``surgeguard_controller.api``) only translate: a body
into arguments, a ``WriteError`` into its status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from surgeguard.chaos import Chaos
from surgeguard.controlplane import Also, ControlPlaneWriter, ControlState
from surgeguard.knobs import KnobError, KnobSpec
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.records import jsonable
from surgeguard_controller.store import AUDIT_KEY, MAX_AUDIT, RecordStore

REASON_MAX = 200  # characters


class WriteError(ValueError):
    """A write that cannot be made; ``status`` is the HTTP status that says so (404 an
    unknown knob, mode or dependency; 422 a value outside what is allowed)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Desk:
    """Where an operator's writes go: the control document (read from ``redis``,
    stored through ``writer``), the audit trail (``records``), and the clock that
    stamps each entry (unix seconds)."""

    redis: aioredis.Redis
    writer: ControlPlaneWriter
    records: RecordStore
    wall: Callable[[], float] = time.time


# -- validate -----------------------------------------------------------------------------


def check_reason(reason: str) -> str:
    if not 1 <= len(reason) <= REASON_MAX:
        raise WriteError(f"reason must be 1 to {REASON_MAX} characters, got {len(reason)}", 422)
    return reason


def known_mode(catalogue: Catalogue, mode: str) -> str:
    if mode not in catalogue.modes:
        raise WriteError(f"unknown mode {mode!r}: allowed are {', '.join(catalogue.modes)}", 404)
    return mode


def known_knob(catalogue: Catalogue, knob: str) -> KnobSpec:
    spec = catalogue.knob_specs.get(knob)
    if spec is None:
        allowed = ", ".join(catalogue.knob_specs)
        raise WriteError(f"unknown knob {knob!r}: allowed are {allowed}", 404)
    return spec


def known_dependency(catalogue: Catalogue, dependency: str) -> str:
    declared = catalogue.dependencies
    if dependency not in declared:
        allowed = ", ".join(declared) or "none (no replica declares a dependency)"
        raise WriteError(f"unknown dependency {dependency!r}: allowed are {allowed}", 404)
    return dependency


def knob_value(spec: KnobSpec, value: int | None, pin: bool | None, state: ControlState) -> int:
    """The value a knob write sets: ``value``, else the one published now (a write may
    only pin or unpin); 422 when there is neither or it is outside the knob's bounds."""
    if value is None and pin is None:
        raise WriteError("give a value, a pin, or both", 422)
    chosen = value if value is not None else state.knobs.get(spec.name)
    if chosen is None:
        raise WriteError(f"value is required: {spec.name} has no published value yet", 422)
    try:
        return spec.check(chosen)
    except KnobError as exc:
        raise WriteError(f"value: {exc}", 422) from None


def chaos_of(latency_multiplier: float, error_rate: float) -> Chaos:
    try:
        return Chaos(latency_multiplier, error_rate)
    except ValueError as exc:
        raise WriteError(str(exc), 422) from None


# -- write: pure changes of the control document -------------------------------------------


def with_mode(state: ControlState, mode: str, active: bool) -> ControlState:
    modes = state.modes | {mode} if active else state.modes - {mode}
    return replace(state, modes=frozenset(modes))


def with_knob(state: ControlState, knob: str, value: int, pin: bool | None) -> ControlState:
    """``knob`` at ``value`` for every replica; pinned or unpinned when ``pin`` says."""
    # An operator's value is for every replica: drop per-replica tuning of it.
    replicas = {r: {k: v for k, v in ks.items() if k != knob} for r, ks in state.replicas.items()}
    pins = set(state.pins)
    if pin is not None:
        (pins.add if pin else pins.discard)(knob)
    return replace(
        state, knobs={**state.knobs, knob: value}, replicas=replicas, pins=frozenset(pins)
    )


def without_pin(state: ControlState, knob: str) -> ControlState:
    return replace(state, pins=state.pins - {knob})


def with_autopilot(state: ControlState, enabled: bool) -> ControlState:
    return replace(state, autopilot=enabled)


def with_chaos(state: ControlState, dependency: str, chaos: Chaos) -> ControlState:
    """``chaos`` on ``dependency``; calm chaos (1.0, 0.0) leaves the document."""
    updated = {d: c for d, c in state.chaos.items() if d != dependency}
    if not chaos.is_calm:
        updated[dependency] = chaos
    return replace(state, chaos=updated)


# -- audit ---------------------------------------------------------------------------------


def audit_record(
    *, at: float, who: str, what: str, old: Any, new: Any, reason: str
) -> dict[str, Any]:
    """One audit entry; ``at`` in unix seconds, ``who`` the operator's name."""
    return {"at": at, "who": who, "what": what, "old": old, "new": new, "reason": reason}


async def audit(desk: Desk, *, who: str, what: str, old: Any, new: Any, reason: str) -> None:
    """An audit entry of its own (for what is not a write of the control document)."""
    record = audit_record(at=desk.wall(), who=who, what=what, old=old, new=new, reason=reason)
    await desk.records.add_audit(record)


# What a write's audit entry says, from the state it started from and the one it stored:
# (what, old, new).
Entry = Callable[[ControlState, ControlState], tuple[str, Any, Any]]


async def _audit_writable(pipe: Any) -> None:
    """The audit entry must be storable, or the write is not made (the audit key is
    watched: it cannot change between this check and the transaction)."""
    kind = await pipe.type(AUDIT_KEY)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("list", "none"):
        raise WriteError(
            f"the audit trail cannot be written ({AUDIT_KEY} holds a {kind}, not a list): "
            "nothing was changed",
            503,
        )


async def write_audited(
    desk: Desk,
    change: Callable[[ControlState], ControlState],
    entry: Entry,
    *,
    who: str,
    reason: str,
) -> ControlState:
    """Store ``change`` and its audit entry in one Redis transaction: both land or
    neither does. ``change`` sees the document as it is at write time (a value it
    keeps is never one read before a controller move)."""

    def queue(pipe: Any, before: ControlState, after: ControlState) -> None:
        what, old, new = entry(before, after)
        record = audit_record(at=desk.wall(), who=who, what=what, old=old, new=new, reason=reason)
        pipe.lpush(AUDIT_KEY, json.dumps(record, separators=(",", ":")))
        pipe.ltrim(AUDIT_KEY, 0, MAX_AUDIT - 1)

    return await desk.writer.update(change, also=Also((AUDIT_KEY,), _audit_writable, queue))


# -- the writes: validate, then write and audit together ---------------------------------------


async def set_mode(
    desk: Desk, catalogue: Catalogue, mode: str, active: bool, *, who: str, reason: str
) -> ControlState:
    """Switch ``mode`` on or off for every replica."""
    known_mode(catalogue, mode)
    check_reason(reason)
    return await write_audited(
        desk,
        lambda s: with_mode(s, mode, active),
        lambda before, after: (f"mode {mode}", mode in before.modes, mode in after.modes),
        who=who,
        reason=reason,
    )


async def set_knob(
    desk: Desk,
    catalogue: Catalogue,
    knob: str,
    *,
    value: int | None,
    pin: bool | None,
    who: str,
    reason: str,
    reported: Mapping[str, Mapping[str, int]] | None = None,
) -> ControlState:
    """Set ``knob`` to ``value`` for every replica and/or pin it (a pinned knob is not
    moved by the controller). Without ``value`` the knob keeps the value the document
    has when the write is made. ``reported``: each replica's knobs as last read, for
    the audit's old value while nothing is published."""
    spec = known_knob(catalogue, knob)
    check_reason(reason)
    if value is None and pin is None:
        raise WriteError("give a value, a pin, or both", 422)
    if value is not None:
        knob_value(spec, value, pin, ControlState())  # 422 before anything is read

    def entry(before: ControlState, after: ControlState) -> tuple[str, Any, Any]:
        old = {"value": _observed(before, knob, reported or {}), "pinned": knob in before.pins}
        return f"knob {knob}", old, {"value": after.knobs[knob], "pinned": knob in after.pins}

    return await write_audited(
        desk,
        lambda s: with_knob(s, knob, knob_value(spec, value, pin, s), pin),
        entry,
        who=who,
        reason=reason,
    )


async def unpin(
    desk: Desk, catalogue: Catalogue, knob: str, *, who: str, reason: str
) -> ControlState:
    """Let the controller move ``knob`` again."""
    known_knob(catalogue, knob)
    check_reason(reason)
    return await write_audited(
        desk,
        lambda s: without_pin(s, knob),
        lambda before, after: (f"pin {knob}", knob in before.pins, knob in after.pins),
        who=who,
        reason=reason,
    )


async def set_autopilot(desk: Desk, enabled: bool, *, who: str, reason: str) -> ControlState:
    """Off: the controller only records what it would have done."""
    check_reason(reason)
    return await write_audited(
        desk,
        lambda s: with_autopilot(s, enabled),
        lambda before, after: ("autopilot", before.autopilot, after.autopilot),
        who=who,
        reason=reason,
    )


async def set_chaos(
    desk: Desk,
    catalogue: Catalogue,
    dependency: str,
    *,
    latency_multiplier: float = 1.0,
    error_rate: float = 0.0,
    who: str,
    reason: str,
) -> ControlState:
    """Make ``dependency`` slower (``latency_multiplier``) or failing (``error_rate``,
    0..1) on every replica; 1.0 and 0.0 put it back."""
    known_dependency(catalogue, dependency)
    chaos = chaos_of(latency_multiplier, error_rate)
    check_reason(reason)

    def entry(before: ControlState, after: ControlState) -> tuple[str, Any, Any]:
        old = jsonable(before.chaos.get(dependency, Chaos()))
        return f"chaos {dependency}", old, jsonable(after.chaos.get(dependency, Chaos()))

    return await write_audited(
        desk, lambda s: with_chaos(s, dependency, chaos), entry, who=who, reason=reason
    )


def _observed(state: ControlState, knob: str, reported: Mapping[str, Mapping[str, int]]) -> Any:
    """What the knob was before a write: the published value, else what replicas report."""
    if knob in state.knobs:
        return state.knobs[knob]
    seen = {replica: knobs[knob] for replica, knobs in reported.items() if knob in knobs}
    return seen or None
