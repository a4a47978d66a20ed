"""Simulated downstream dependencies (db, cache, recommendations, payments).

Like a real database under overload: ``capacity`` parallel slots, ``base_latency_s``
seconds of work per call, and with ``n`` calls inside each progresses at rate
``min(1, capacity / n)`` (processor sharing): at ``n = 2 * capacity`` every call takes
about twice its base latency. ``ProcessorSharing`` is the pure core (time is data);
``SimulatedDependency`` drives it from the event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping

from surgeguard.chaos import CALM, Chaos

DEPENDENCY_NAMES = ("db", "cache", "recommendations", "payments")

# Finish times within this many seconds of ``now`` count as done: absorbs float
# rounding in ``at + remaining / rate`` so a job due exactly at ``now`` departs at ``now``.
_EPSILON_S = 1e-9


class DependencyError(Exception):
    """A simulated dependency failed (chaos ``error_rate``), after doing its work."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _check_capacity(capacity: int, who: str) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"{who}: capacity must be an integer in [1, inf) slots, got {capacity!r}")
    return capacity


class ProcessorSharing:
    """Exact processor sharing in virtual time; every method takes ``now`` (seconds).

    V advances by ``min(1, capacity / n)`` per real second while ``n`` jobs are in service;
    a job arriving at V0 with ``work_s`` seconds of work finishes when V reaches
    ``V0 + work_s``. Finish tags sit in a heap: O(log n) per event."""

    def __init__(self, capacity: int) -> None:
        self._capacity = _check_capacity(capacity, "ProcessorSharing")
        self._virtual = 0.0  # V, seconds of work each job in service has received
        self._at: float | None = None  # real time (seconds) V was last brought up to date
        self._heap: list[tuple[float, int]] = []  # (finish tag, job id); cancelled ones lazily
        self._live: dict[int, float] = {}  # job id -> finish tag, jobs in service
        self._done: list[tuple[float, int]] = []  # (finish time, job id), not yet collected
        self._next_id = 0

    @property
    def capacity(self) -> int:  # parallel slots: up to this many jobs run at full speed
        return self._capacity

    @property
    def active(self) -> int:  # jobs in service as of the last ``now`` seen
        return len(self._live)

    def _rate(self) -> float:
        return min(1.0, self._capacity / len(self._live))

    def _head(self) -> tuple[float, int]:
        while self._heap[0][1] not in self._live:  # drop cancelled entries
            heapq.heappop(self._heap)
        return self._heap[0]

    def _advance(self, now: float) -> None:
        at = now if self._at is None else self._at
        if now < at:
            raise ValueError(f"time went backwards: now={now} < last={at} seconds")
        # n changes at each departure, so walk from departure to departure up to now.
        while self._live:
            tag, job = self._head()
            finish_at = at + (tag - self._virtual) / self._rate()
            if finish_at > now + _EPSILON_S:
                break
            heapq.heappop(self._heap)
            del self._live[job]
            self._done.append((finish_at, job))
            self._virtual, at = tag, min(finish_at, now)
        if self._live:
            self._virtual += (now - at) * self._rate()
        else:  # idle: restart V at zero, which keeps tags small and exact
            self._virtual = 0.0
            self._heap.clear()
        self._at = now

    def arrive(self, now: float, work_s: float) -> int:
        """A job with ``work_s`` seconds of full-speed work arrives; returns its id."""
        if not (math.isfinite(work_s) and work_s >= 0):
            raise ValueError(f"work_s must be a finite number of seconds >= 0, got {work_s!r}")
        self._advance(now)
        job, self._next_id = self._next_id, self._next_id + 1
        tag = self._virtual + work_s
        self._live[job] = tag
        heapq.heappush(self._heap, (tag, job))
        return job

    def depart_due(self, now: float) -> list[int]:
        """Ids of the jobs whose work is done by ``now``, in finishing order (once each)."""
        self._advance(now)
        due = [job for _, job in self._done]
        self._done.clear()
        return due

    def next_completion(self, now: float) -> float | None:
        """Absolute time (seconds) the next job finishes if nothing else arrives
        (``<= now`` if some are due but not collected); ``None`` when idle."""
        self._advance(now)
        if self._done:
            return self._done[0][0]
        if not self._live:
            return None
        return now + (self._head()[0] - self._virtual) / self._rate()

    def cancel(self, now: float, job: int) -> bool:
        """The caller gave up at ``now``: the job stops taking a share. True if it was in
        service; False if it had already finished (it is then not reported) or is unknown."""
        self._advance(now)
        if self._live.pop(job, None) is not None:
            self._advance(now)  # an idle server resets V
            return True
        self._done = [(at, j) for at, j in self._done if j != job]
        return False

    def resize(self, now: float, capacity: int) -> None:
        """Change the number of parallel slots from ``now`` on."""
        _check_capacity(capacity, "ProcessorSharing")
        self._advance(now)
        self._capacity = capacity


class SimulatedDependency:
    """One dependency: ``await call()`` takes ``base_latency_s`` seconds when calm and
    under capacity, longer when shared or slowed by chaos."""

    # Time: the injected clock is the only source of ``now`` for the core; the loop timer
    # is just a wake-up. When it fires the clock is read again and only jobs really done
    # depart, so an early wake-up (asyncio runs timers up to its clock resolution early)
    # or a late one never ends a call too soon; it re-arms. The default, time.monotonic,
    # is the asyncio loop's own clock. A fake clock would stall calls here, so fake-clock
    # tests drive ProcessorSharing directly.

    def __init__(
        self,
        name: str,
        capacity: int,
        base_latency_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._core = ProcessorSharing(_check_capacity(capacity, name))
        self.base_latency_s = base_latency_s
        self._chaos = CALM
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None  # wakes at the next completion
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's loop
        self.calls = 0
        self.peak_in_service = 0

    @property
    def capacity(self) -> int:  # parallel slots: up to this many calls run at full speed
        return self._core.capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._core.resize(self._clock(), _check_capacity(value, self.name))
        if self._timer is not None and self._loop is not None:  # next completion moved
            self._rearm(self._loop)

    @property
    def base_latency_s(self) -> float:  # seconds a call takes at full speed (new calls)
        return self._base_latency_s

    @base_latency_s.setter
    def base_latency_s(self, value: float) -> None:
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"{self.name}: base_latency_s must be in (0, inf) seconds, got {value!r}"
            )
        self._base_latency_s = float(value)

    @property
    def chaos(self) -> Chaos:
        return self._chaos

    def set_chaos(self, chaos: Chaos) -> None:  # for calls that start from now on
        self._chaos = chaos

    @property
    def in_service(self) -> int:  # calls inside the dependency now
        return len(self._waiters)

    async def call(self, work_factor: float = 1.0) -> None:
        """Do ``base_latency_s * chaos.latency_multiplier * work_factor`` seconds of work,
        shared with the other calls inside. Raises ``DependencyError`` with probability
        ``chaos.error_rate`` only after the work is done: a failing dependency still
        takes the time and the capacity, which is what hurts callers in real outages."""
        if not (math.isfinite(work_factor) and work_factor >= 0):
            raise ValueError(f"{self.name}: work_factor must be in [0, inf), got {work_factor!r}")
        chaos = self._chaos
        fails = chaos.error_rate > 0 and self._rng.random() < chaos.error_rate
        loop = asyncio.get_running_loop()
        job = self._core.arrive(
            self._clock(), self._base_latency_s * chaos.latency_multiplier * work_factor
        )
        done: asyncio.Future[None] = loop.create_future()
        self._waiters[job] = done
        self.calls += 1
        self.peak_in_service = max(self.peak_in_service, len(self._waiters))
        self._rearm(loop)
        try:
            await done
        except asyncio.CancelledError:
            # Cut off (e.g. a bulkhead timeout): stop taking a share of the capacity.
            if self._waiters.pop(job, None) is not None:
                self._core.cancel(self._clock(), job)
                self._rearm(loop)
            raise
        if fails:
            raise DependencyError(self.name, f"simulated failure (error_rate {chaos.error_rate})")

    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        due = self._core.next_completion(now)
        if due is not None:
            self._timer, self._loop = loop.call_later(max(0.0, due - now), self._wake, loop), loop

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        for job in self._core.depart_due(self._clock()):
            done = self._waiters.pop(job, None)
            if done is not None and not done.done():
                done.set_result(None)
        self._rearm(loop)


class SimulatedDependencies(Mapping[str, SimulatedDependency]):
    """The service's dependencies by name; iterating yields names, ``values()`` the deps."""

    def __init__(self, dependencies: Mapping[str, SimulatedDependency]) -> None:
        self._deps = dict(dependencies)

    @classmethod
    def build(
        cls,
        capacities: Mapping[str, int],
        latencies_ms: Mapping[str, float],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SimulatedDependencies:
        """One dependency per name; ``capacities`` in slots, ``latencies_ms`` in
        milliseconds. Each gets its own RNG seeded from ``rng``, so one dependency's
        failures do not depend on how often the others are called."""
        if set(capacities) != set(latencies_ms):
            raise ValueError(
                f"capacities and latencies_ms must name the same dependencies, "
                f"got {sorted(capacities)} and {sorted(latencies_ms)}"
            )
        parent = rng if rng is not None else random.Random()
        return cls(
            {
                name: SimulatedDependency(
                    name,
                    capacities[name],
                    latencies_ms[name] / 1000.0,
                    clock=clock,
                    rng=random.Random(parent.getrandbits(64)),
                )
                for name in capacities
            }
        )

    def __getitem__(self, name: str) -> SimulatedDependency:
        try:
            return self._deps[name]
        except KeyError:
            raise KeyError(f"unknown dependency {name!r}, known: {sorted(self._deps)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._deps)

    def __len__(self) -> int:
        return len(self._deps)

    def apply_chaos(self, chaos: Mapping[str, Chaos]) -> None:
        """Set chaos on the named dependencies; all others go back to ``CALM``."""
        unknown = sorted(set(chaos) - set(self._deps))
        if unknown:
            raise ValueError(f"unknown dependencies {unknown}, known: {sorted(self._deps)}")
        for name, dep in self._deps.items():
            dep.set_chaos(chaos.get(name, CALM))
