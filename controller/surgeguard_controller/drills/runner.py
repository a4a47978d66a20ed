"""The controller's own drills: at most one ``surgeguard load`` child at a time.

``start`` spawns ``python -m surgeguard load --scenario ... --host <first target>
--controller <this controller> --out <out_root>/<id>`` with the controller's
environment (the admin token included: ``slow_dependency`` calls the chaos API
itself), its output going to ``drill.log`` in that directory. A watcher task polls the
child (never blocking the event loop) and records how it ended. ``stop`` sends
SIGTERM to that child only (the load generator then stops Locust and still writes its
reports) and SIGKILL after ``stop_timeout_s``. The child dies with the controller
(PDEATHSIG), and the app's lifespan stops a running drill on shutdown.

The drill's chaos goes through ``set_chaos`` (the child calls the drills API with its
drill id), which records it on the drill before writing it. However the drill ends
(on its own, stopped, its child killed, the controller shutting down), the runner
puts that chaos back itself, straight in Redis and audited: the child's own undo goes
over HTTP, which a dead child or a closed listening socket never sends. At start,
``recover`` puts back what drills of a controller that went away left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from surgeguard.aio import cancel_and_wait
from surgeguard.chaos import Chaos
from surgeguard.runtime.process import die_with_parent, terminate
from surgeguard_controller import operator_writes as writes
from surgeguard_controller.catalogue import Catalogue
from surgeguard_controller.drills.drill import (
    Drill,
    DrillError,
    DrillSpec,
    chaos_cleared,
    ended,
    leftover_chaos,
    load_command,
    orphaned,
    started,
    stop_requested,
    with_chaos,
)
from surgeguard_controller.drills.store import DrillStore
from surgeguard_controller.records import jsonable

log = logging.getLogger("surgeguard_controller.drills.drill")

DEFAULT_COMMAND = (sys.executable, "-m", "surgeguard", "load")
LOG_NAME = "drill.log"
TAIL_BYTES = 4096


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a (possibly long) log, read from its end."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class DrillRunner:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        *,
        target: str | Callable[[], str],
        out_root: Path,
        controller_url: str | None = None,
        admin_token: str | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 15.0,
        poll_s: float = 0.2,
        overrun_grace_s: float = 60.0,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``target``: the URL the load goes to (or what gives it when a drill starts:
        the controller's first target, which may come and go); ``controller_url``: this
        controller as the child should reach it (None: taken from the request that
        starts a drill);
        ``command``: the load generator, its drill arguments appended; ``env``: the
        child's environment (default: the controller's own). ``stop_timeout_s``: SIGTERM
        to SIGKILL, seconds; ``overrun_grace_s``: a drill still running this long past
        its duration is stopped, seconds; ``poll_s``: how often the child is polled."""
        if stop_timeout_s <= 0 or poll_s <= 0 or overrun_grace_s < 0:
            raise ValueError(
                "stop_timeout_s and poll_s must be > 0 and overrun_grace_s >= 0 seconds, got "
                f"{stop_timeout_s}, {poll_s}, {overrun_grace_s}"
            )
        self.store = DrillStore(redis_client)
        self._target = target
        self.out_root = out_root.resolve()  # the child may run elsewhere; paths must not move
        self.controller_url = controller_url.rstrip("/") if controller_url else None
        self.command = tuple(command)
        child_env = dict(os.environ if env is None else env)
        child_env["PYTHONUNBUFFERED"] = "1"  # progress lines reach the log as they happen
        if admin_token:
            child_env["SURGEGUARD_ADMIN_TOKEN"] = admin_token
        self._env = child_env
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.overrun_grace_s = overrun_grace_s
        self.wall, self._clock = wall, clock
        self.current: Drill | None = None  # the drill running now
        self.last: Drill | None = None  # the last one to end
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._kill_at = math.inf  # monotonic seconds when a stop turns into SIGKILL
        self._lock = asyncio.Lock()
        # Setting a drill's chaos and putting it back at its end never interleave.
        self._chaos_lock = asyncio.Lock()
        self.desk: writes.Desk | None = None  # where chaos is written (``bind``)

    @property
    def target(self) -> str:
        """The URL a drill started now would load ("" while there is none)."""
        return (self._target() if callable(self._target) else self._target).rstrip("/")

    def bind(self, desk: writes.Desk) -> None:
        """Where the drills' chaos is written and audited (the controller's desk)."""
        self.desk = desk

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running drill's load generator (None when none runs)."""
        return self._process

    # -- start ----------------------------------------------------------------------

    async def start(
        self, spec: DrillSpec, *, who: str, reason: str, controller_url: str | None = None
    ) -> Drill:
        """Spawn the drill; ``DrillError`` 409 while one runs, 500 when it cannot start."""
        async with self._lock:
            if self.current is not None:
                c = self.current
                raise DrillError(
                    f"drill {c.id} ({c.scenario}) is running: stop it before starting another",
                    409,
                )
            if not self.target:
                raise DrillError("no replica to load: no target is given or announced", 409)
            own_url = self.controller_url or (controller_url or "").rstrip("/")
            at = self.wall()
            stamp = datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%S")
            drill_id = f"{stamp}-{spec.scenario}-{secrets.token_hex(3)}"
            out_dir = self.out_root / drill_id
            command = load_command(
                self.command,
                spec,
                target=self.target,
                controller_url=own_url,
                out_dir=out_dir,
                drill_id=drill_id,
            )
            try:
                process = self._spawn(command, out_dir)
            except OSError as exc:
                raise DrillError(f"could not start the load generator: {exc}", 500) from None
            drill = started(
                drill_id, spec, who=who, reason=reason, at=at, out_dir=out_dir, pid=process.pid
            )
            try:
                await self.store.add(drill)
            except RedisError as exc:
                # A drill nobody can see or mark on a chart is worse than none.
                await asyncio.to_thread(terminate, process, 2.0)
                raise DrillError(f"could not record the drill in Redis: {exc}", 503) from None
            self.current, self._process, self._kill_at = drill, process, math.inf
            self._watcher = asyncio.create_task(self._watch(process), name=f"drill {drill_id}")
            log.info("drill %s started: pid %d, %s", drill_id, process.pid, " ".join(command))
        return drill

    def _spawn(self, command: list[str], out_dir: Path) -> subprocess.Popen[bytes]:
        # Started on the event loop's thread, which lives as long as the controller:
        # PDEATHSIG fires when the forking *thread* ends (see die_with_parent).
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / LOG_NAME).open("ab") as out:
            return subprocess.Popen(
                command,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the controller's terminal is the
                # controller's to handle (it stops the drill, which then writes reports).
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    # -- watching -------------------------------------------------------------------

    async def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """Poll the child until it exits; stop it when it overruns; SIGKILL it when a
        stop takes longer than ``stop_timeout_s``; then record how it ended."""
        drill = self.current
        assert drill is not None
        overrun_at = self._clock() + (drill.duration_s or 0.0) + self.overrun_grace_s
        try:
            while (code := process.poll()) is None:
                now = self._clock()
                if now >= self._kill_at:
                    log.warning(
                        "drill %s ignored SIGTERM for %g s: SIGKILL", drill.id, self.stop_timeout_s
                    )
                    process.kill()
                    self._kill_at = math.inf  # once
                elif now >= overrun_at and self.current is not None and not self._stopping:
                    self._request_stop(
                        "controller",
                        f"still running {self.overrun_grace_s:g} s past its {drill.duration_s:g} s",
                    )
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            if process.poll() is None:  # never leave a load generator behind
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=1.0)
            raise
        await self._finish(code)

    async def _finish(self, code: int) -> None:
        current = self.current
        assert current is not None
        tail = ""
        if code != 0 and current.stopped_by is None and current.out_dir is not None:
            tail = await asyncio.to_thread(log_tail, Path(current.out_dir) / LOG_NAME)
        async with self._chaos_lock:
            final = ended(self.current or current, exit_code=code, at=self.wall(), log_tail=tail)
            log.info("drill %s %s (exit %d)", final.id, final.status, code)
            final = await self._undo_chaos(final, f"ended ({final.status}, exit {code})")
        try:
            await self.store.update(final)
        except RedisError as exc:
            log.warning("could not record the end of drill %s: %s", final.id, exc)
        finally:
            self.last = final
            self.current, self._process, self._kill_at = None, None, math.inf

    # -- chaos ----------------------------------------------------------------------

    async def set_chaos(
        self,
        drill_id: str,
        catalogue: Catalogue,
        dependency: str,
        *,
        latency_multiplier: float,
        error_rate: float,
        who: str,
        reason: str,
    ) -> Drill:
        """Chaos on ``dependency`` for the running drill ``drill_id``, recorded on the
        drill first (so whatever ends the drill finds it) and then written and audited
        like an operator's. ``DrillError`` 409 when that drill is not the one running
        (a chaos of a drill that has ended would outlive it); ``WriteError`` as for any
        chaos write (unknown dependency, values out of range, no reason)."""
        writes.known_dependency(catalogue, dependency)
        chaos = writes.chaos_of(latency_multiplier, error_rate)
        writes.check_reason(reason)
        if self.desk is None:
            raise DrillError("drills cannot set chaos here (no control document)", 409)
        async with self._chaos_lock:
            drill, process = self.current, self._process
            # A call that arrives once its child has exited (a request still in flight
            # when it was killed) would set chaos nothing is left to undo.
            if (
                drill is None
                or drill.id != drill_id
                or process is None
                or process.poll() is not None
            ):
                raise DrillError(
                    f"drill {drill_id} is not running: chaos refused (it would outlive the drill)",
                    409,
                )
            self.current = with_chaos(drill, dependency, jsonable(chaos))
            await self.store.update(self.current)
            await writes.set_chaos(
                self.desk,
                catalogue,
                dependency,
                latency_multiplier=latency_multiplier,
                error_rate=error_rate,
                who=who,
                reason=f"drill {drill_id}: {reason}",
            )
            return self.current

    async def _undo_chaos(self, drill: Drill, why: str) -> Drill:
        """Put back the chaos ``drill`` set and did not put back itself (unless someone
        has changed it since: then it is theirs), straight in Redis, audited; the
        record as it then is (unchanged when Redis could not be written: the next
        start tries again)."""
        left = leftover_chaos(drill)
        if not left or self.desk is None:
            return drill
        try:
            state = await self.desk.writer.current()
            for dependency, set_to in left.items():
                now = jsonable(state.chaos.get(dependency, Chaos()))
                if now != dict(set_to):
                    log.info(
                        "chaos on %s changed since drill %s set it: left", dependency, drill.id
                    )
                    continue
                await self.desk.writer.set_chaos(dependency, Chaos())
                await writes.audit(
                    self.desk,
                    who="controller",
                    what=f"chaos {dependency}",
                    old=dict(set_to),
                    new=jsonable(Chaos()),
                    reason=f"drill {drill.id} {why}: its chaos undone",
                )
                log.info("drill %s %s: chaos on %s undone", drill.id, why, dependency)
        except (RedisError, RuntimeError) as exc:  # RuntimeError: another controller writes
            log.warning("could not undo the chaos of drill %s: %s", drill.id, exc)
            return drill
        return chaos_cleared(drill)

    # -- stop -----------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self.current is not None and self.current.stopped_by is not None

    def _request_stop(self, who: str, reason: str) -> None:
        assert self.current is not None and self._process is not None
        self.current = stop_requested(self.current, who=who, reason=reason)
        self._kill_at = self._clock() + self.stop_timeout_s
        with contextlib.suppress(ProcessLookupError):
            # The Popen handle signals only its own, not yet reaped, child: never a
            # recycled pid.
            self._process.send_signal(signal.SIGTERM)

    async def stop(self, *, who: str, reason: str) -> Drill:
        """SIGTERM the running drill and wait (at most ``stop_timeout_s`` plus a little)
        for it to end; returns its final record. ``DrillError`` 409 when none runs."""
        watcher = self._watcher
        if self.current is None or watcher is None or watcher.done():
            raise DrillError("no drill started by the controller is running", 409)
        if not self._stopping:  # a second stop only waits for the first
            self._request_stop(who, reason)
            with contextlib.suppress(RedisError):
                await self.store.update(self.current)
        # wait(), not wait_for(): a request that goes away must not cancel the watcher.
        await asyncio.wait({watcher}, timeout=self.stop_timeout_s + 5 * self.poll_s + 2.0)
        latest = self.last if watcher.done() else self.current
        assert latest is not None
        return latest

    async def shutdown(self, reason: str = "the controller is shutting down") -> None:
        """Stop a running drill and put its chaos back (the app's lifespan ends; the
        controller's Redis must still be open)."""
        if self.current is not None:
            with contextlib.suppress(DrillError):
                await self.stop(who="controller", reason=reason)
        if self._watcher is not None and not self._watcher.done():
            await cancel_and_wait(self._watcher)  # it kills a child still there
        if self.current is not None:  # the watcher was cancelled before it could finish
            process = self._process
            code = process.poll() if process is not None else None
            await self._finish(-signal.SIGKILL if code is None else code)

    # -- start-up -------------------------------------------------------------------

    async def recover(self) -> list[Drill]:
        """Close the records of controller drills left running by a controller that went
        away (their children died with it) and put back the chaos any drill that is
        not running left (audited); returns the records changed."""
        fixed = []
        current_id = self.current.id if self.current is not None else None
        for drill in await self.store.recent():
            if drill.id == current_id:
                continue
            now = drill
            if drill.source == "controller" and drill.running:
                now = orphaned(drill, at=self.wall())
            if leftover_chaos(now):
                now = await self._undo_chaos(now, "was left by a controller that stopped")
            if now != drill:
                fixed.append(now)
                await self.store.update(now)
        return fixed

    async def recover_until_clean(self, retry_s: float = 0.5, most_s: float = 30.0) -> None:
        """``recover`` again until no drill that is not running holds chaos: a controller
        killed a moment ago still holds the lease for a few seconds, and only the holder
        may write the control document. After ``retry_s`` seconds, then twice as long
        each time up to ``most_s`` (a standby controller waits this way for good)."""
        while True:
            try:
                await self.recover()
                current_id = self.current.id if self.current is not None else None
                drills = await self.store.recent()
                if not any(leftover_chaos(d) for d in drills if d.id != current_id):
                    return
            except RedisError as exc:
                log.warning("could not check for chaos left by drills: %s", exc)
            await asyncio.sleep(retry_s)
            retry_s = min(2 * retry_s, most_s)
