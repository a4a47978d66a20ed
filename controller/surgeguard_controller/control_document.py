"""The control document as this controller knows it, and the lease that lets it write.

Each tick the controller renews its lease (``surgeguard_controller.lease``: only the
holder writes) and reads the document from Redis. It survives the loss of Redis's data
(issue 13): it keeps the last good document in memory (``last_good``); a document gone,
unreadable or older than what it knew is rebuilt from that memory (or, after a restart,
from what the replicas report they enforce) above any version seen, and audited in the
same transaction; an unreadable one is reported (``error``) and decided around (nothing
is published) until a write repairs it. Every write goes through ``writer``, which
holds the lease's fence while writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard.controlplane import (
    ControlDocumentError,
    ControlPlaneWriter,
    ControlState,
    NotHolder,
    read_state,
)
from surgeguard_controller.lease import Lease
from surgeguard_controller.replica_views import ReplicaViews
from surgeguard_controller.store import RecordStore

log = logging.getLogger("controller")


class ControlDocument:
    def __init__(
        self,
        client: aioredis.Redis,
        lease: Lease,
        views: ReplicaViews,
        store: RecordStore,
        *,
        check: Callable[[ControlState], None],
        wall: Callable[[], float],
    ) -> None:
        """``views``: the replicas, whose reports a lost document is rebuilt from and
        above whose applied versions every write goes; ``store``: where a restore is
        audited; ``check``: run on every document before it is stored; ``wall``: unix
        seconds (the audit entry's time)."""
        self._client = client
        self.lease = lease
        self._views = views
        self._store = store
        self._wall = wall
        self.control = ControlState()  # the document decided from this tick
        self.last_good = ControlState()  # the last valid document read or written
        self.error: str | None = None  # why the stored document is not used
        self.stale = False  # True while Redis cannot be read
        self._lease_said: bool | None = None
        self._stored_version = 0  # the version read from Redis this tick (0: none)
        self._recalled_from = ""
        self.writer = ControlPlaneWriter(
            client,
            writer="controller",
            check=check,
            recall=self.recall,
            floor=views.highest_applied,
            fence=lease.fence,
            on_restore=self._restored,
        )

    async def sync(self) -> None:
        """Renew the lease and read the document. Raises ``RedisError`` when Redis cannot
        be reached (``stale`` then says so until a read works again)."""
        try:
            await self._renew_lease()
            await self._read()
        except RedisError:
            self.stale = True
            raise
        self.stale = False

    async def write(self, change: Callable[[ControlState], ControlState]) -> ControlState:
        """Store ``change`` of the current document as its next version and remember it
        (``ControlPlaneWriter.update``: ``NotHolder``, ``RedisError``)."""
        self.control = self.last_good = await self.writer.update(change)
        return self.control

    async def restore(self) -> str | None:
        """Rewrite the document when it is gone or older than what this controller or a
        replica knew (only the lease holder writes); the error when Redis failed."""
        if not self.lease.held or not self._needs_restore():
            return None
        try:
            await self.write(lambda s: s)
        except NotHolder:
            return None
        except RedisError as exc:
            return f"could not restore the control document: {exc}"
        return None

    def recall(self) -> ControlState:
        """What to rebuild the plane from: the last good document; without one (the
        controller just started), what the replicas report they enforce."""
        top, known = self._views.highest_applied(), self.known
        self._recalled_from = "the controller's last good document"
        if known.version >= top:
            return known
        self._recalled_from = "what the replicas report they enforce"
        # The replicas enforce a newer document than any this controller read: take
        # their knobs, modes, pins and autopilot (as last known where not reported).
        reporting = [v for v in self._views.by_target.values() if v.applied_version == top]
        pins = [v.reported_pins for v in reporting if v.reported_pins is not None]
        autopilot = [v.reported_autopilot for v in reporting if v.reported_autopilot is not None]
        knobs: dict[str, int] = {}
        replicas: dict[str, dict[str, int]] = {}
        for name in {k for v in reporting for k in v.enforced_knobs}:
            values = {
                v.replica: v.enforced_knobs[name] for v in reporting if name in v.enforced_knobs
            }
            if len(set(values.values())) == 1:
                knobs[name] = next(iter(values.values()))
            else:
                for replica, value in values.items():
                    replicas.setdefault(replica, {})[name] = value
        return replace(
            known,
            version=top,
            knobs=knobs,
            replicas=replicas,
            modes=frozenset(m for v in reporting for m in v.enforced_modes),
            pins=frozenset().union(*pins) if pins else known.pins,
            autopilot=all(autopilot) if autopilot else known.autopilot,
        )

    @property
    def known(self) -> ControlState:
        """The newest document this controller read or wrote (an operator's write too)."""
        return max(self.last_good, self.writer.last_written, key=lambda s: s.version)

    def json(self) -> dict[str, object]:
        """What ``GET /state`` says about the document and the lease."""
        return {
            "control_error": self.error,
            "control_stale": self.stale,
            "lease": self.lease.json(),
        }

    async def _renew_lease(self) -> None:
        held = await self.lease.renew()
        if held != self._lease_said:
            if held:
                log.info("holding the controller lease: this controller writes")
            else:
                log.warning(
                    "controller %s holds the lease: this one reads and decides but writes nothing",
                    self.lease.holder,
                )
            self._lease_said = held

    async def _read(self) -> None:
        """Read the document; keep the last good one when it is unreadable or older."""
        try:
            state = await read_state(self._client)
        except ControlDocumentError as exc:
            if self.error is None:
                log.error("the stored control document is invalid, holding: %s", exc)
            self.error = f"invalid control document in Redis: {exc}"
            return  # decide from the last good one; publish nothing until it is repaired
        self.error = None
        self._stored_version = state.version
        if state.version >= self.last_good.version and state.version > 0:
            self.control = self.last_good = state
        elif self.last_good.version == 0 and state.version == 0:
            self.control = state

    def _needs_restore(self) -> bool:
        """The document is gone or older than what this controller or a replica knew."""
        if self.error is not None:
            return False  # an invalid document: the next write repairs it
        return self._stored_version < max(self.known.version, self._views.highest_applied())

    def _restored(self, pipe: Any, state: ControlState, why: str) -> None:
        """The restore's audit entry, in the restoring write's transaction."""
        source = self._recalled_from
        restored = state.restored_from
        self._store.queue_audit(
            pipe,
            {
                "at": self._wall(),
                "who": "controller",
                "what": "control document restored",
                "old": None if restored is None else {"epoch": restored[0], "version": restored[1]},
                "new": {"epoch": state.epoch, "version": state.version},
                "reason": f"{why}; rebuilt from {source}",
            },
        )
