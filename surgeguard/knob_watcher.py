"""The replica side of the control plane: follow the document, apply it, fail static.

A pub/sub notice makes a change arrive at once; polling every ``poll_interval_s``
catches what a dropped subscription missed. A document is validated whole before
any of it is applied. If Redis goes away the replica keeps its last knobs, keeps
serving, and ``staleness_s`` says for how long it has not heard from the plane.
If the document vanishes or goes backwards (Redis lost its data) the replica keeps
what it applied until a newer document arrives (``ControlState.newer_than``; the
rules are in ``surgeguard.controlplane``) and says so in ``last_error``.

The controller republishes every tick, so a new version is not news: the watcher logs
one INFO line when what this replica enforces changes (knobs, modes, chaos), saying what
changed, and a DEBUG line for a document that changes nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard.aio import cancel_and_wait
from surgeguard.chaos import Chaos
from surgeguard.controlplane import (
    CONTROL_CHANNEL,
    ControlDocumentError,
    ControlState,
    read_state,
)
from surgeguard.knobs import KnobError, Knobs
from surgeguard.modes import DOOR_MODE_NAMES

log = logging.getLogger("surgeguard.control")

Apply = Callable[[ControlState], None]
_UNREACHABLE = "control plane unreachable"


@dataclass(frozen=True)
class Enforced:
    """What one replica enforces: its effective knobs, its modes, the chaos injected."""

    knobs: Mapping[str, int] = field(default_factory=dict)
    modes: frozenset[str] = frozenset()
    chaos: Mapping[str, Chaos] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        state: ControlState,
        replica: str,
        initial: Knobs,
        initial_modes: frozenset[str],
        known_modes: Collection[str] = DOOR_MODE_NAMES,
    ) -> Enforced:
        """As the replica applies ``state`` (version 0, no document: the start-up modes;
        modes it does not know are left out)."""
        modes = state.modes if state.version > 0 else initial_modes
        return cls(
            dict(state.knobs_for(replica, initial)),
            frozenset(m for m in modes if m in known_modes),
            {d: c for d, c in state.chaos.items() if c != Chaos()},
        )


def describe_change(before: Enforced, after: Enforced) -> str:
    """``"concurrency_limit 64 -> 52, modes +read_only"``; empty when nothing changed."""
    parts = [
        f"{name} {before.knobs.get(name, '?')} -> {value}"
        for name, value in after.knobs.items()
        if before.knobs.get(name) != value
    ]
    modes = [f"+{m}" for m in sorted(after.modes - before.modes)]
    modes += [f"-{m}" for m in sorted(before.modes - after.modes)]
    if modes:
        parts.append("modes " + " ".join(modes))
    for dep in sorted({*before.chaos, *after.chaos}):
        old, new = before.chaos.get(dep, Chaos()), after.chaos.get(dep, Chaos())
        if old == new:
            continue
        what = []
        if old.latency_multiplier != new.latency_multiplier:
            what.append(f"latency x{old.latency_multiplier:g} -> x{new.latency_multiplier:g}")
        if old.error_rate != new.error_rate:
            what.append(f"errors {old.error_rate:.0%} -> {new.error_rate:.0%}")
        parts.append(f"chaos {dep} " + " ".join(what))
    return ", ".join(parts)


class KnobWatcher:
    def __init__(
        self,
        client: aioredis.Redis,
        apply: Apply,
        *,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        replica: str = "",
        initial: Knobs | None = None,
        initial_modes: frozenset[str] = frozenset(),
        known_modes: Collection[str] = DOOR_MODE_NAMES,
    ) -> None:
        """``replica``, ``initial`` and ``initial_modes``: whose knobs to describe in the
        log when they change, and what it enforces before any document."""
        self._client = client
        self._apply = apply
        self._replica = replica
        self._initial = initial if initial is not None else Knobs()
        self._initial_modes = initial_modes
        self._known_modes = known_modes
        self._enforced = Enforced.of(
            ControlState(), replica, self._initial, initial_modes, known_modes
        )
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self.applied_version = -1
        self.applied_epoch = ""
        self.last_ok = clock()  # start-up values count as fresh
        self.errors = 0
        self.rejected_documents = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def staleness_s(self) -> float:
        """Seconds since the control plane was last read successfully."""
        return max(0.0, self._clock() - self.last_ok)

    async def refresh(self) -> bool:
        """Read the document once and apply it if it is new. True when Redis answered."""
        try:
            state = await read_state(self._client)
        except ControlDocumentError as exc:
            self._refuse(str(exc))
            self.last_ok = self._clock()  # Redis answered; the document is what's wrong
            return True
        except (RedisError, OSError) as exc:
            self._fail(exc)
            return False
        self.last_ok = self._clock()
        if self.last_error.startswith(_UNREACHABLE):
            log.info("control plane reachable again")
        if state.newer_than(self.applied_epoch, self.applied_version):
            try:
                self._apply(state)
            except (KnobError, ValueError) as exc:
                self._refuse(str(exc))
                return True
            first = self.applied_version < 0
            self.applied_version, self.applied_epoch = state.version, state.epoch
            self._log_applied(state, first)
        elif (state.version, state.epoch) != (self.applied_version, self.applied_epoch):
            self._keep(state)
            return True
        self.last_error = ""  # Redis answered and what it holds is applied
        return True

    def _keep(self, state: ControlState) -> None:
        """A document that is not newer (gone, older, or another history at a version
        not above ours): keep enforcing what was applied."""
        if state.version == 0 and not state.epoch:
            why = f"control document gone: keeping v{self.applied_version} until a newer one"
        else:
            why = (
                f"control document v{state.version} (epoch {state.epoch or '-'}) is not newer "
                f"than the applied v{self.applied_version} (epoch {self.applied_epoch or '-'}): "
                "keeping it until a newer one"
            )
        if why != self.last_error:
            log.warning("%s", why)
        self.last_error = why

    def _log_applied(self, state: ControlState, first: bool) -> None:
        enforced = Enforced.of(
            state, self._replica, self._initial, self._initial_modes, self._known_modes
        )
        change = describe_change(self._enforced, enforced)
        self._enforced = enforced
        if state.version == 0:
            log.info("no control document yet: enforcing the start-up knobs and modes")
        elif change:
            log.info("control v%d: %s", state.version, change)
        elif first:
            log.info("control v%d: same knobs and modes as at start-up", state.version)
        else:
            log.debug("control v%d: nothing this replica enforces changed", state.version)

    def _refuse(self, why: str) -> None:
        self.rejected_documents += 1
        if why != self.last_error:
            log.error("refused control document, keeping current knobs: %s", why)
        self.last_error = why

    def _fail(self, exc: BaseException) -> None:
        self.errors += 1
        why = f"{_UNREACHABLE}: {exc}"
        if why != self.last_error:
            log.warning("%s; keeping the last knobs", why)
        self.last_error = why

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="knob-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def run(self) -> None:
        """Forever: subscribe, then refresh on every notice and every poll period."""
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(CONTROL_CHANNEL)
                await self.refresh()  # anything published before we subscribed
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_interval_s
                    )
                    if not await self.refresh() and message is None:
                        break
            except (RedisError, OSError) as exc:
                self._fail(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Redis is away: poll (cheaply) until it answers, then resubscribe.
            while not await self.refresh():  # noqa: ASYNC110 - polling Redis, not a flag
                await asyncio.sleep(self.poll_interval_s)
