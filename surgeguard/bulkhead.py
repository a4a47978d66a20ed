"""A bulkhead per dependency: a limit on concurrent calls, a maximum wait, a timeout.

When the bulkhead is full for longer than ``max_wait_s`` or a call runs past
``timeout_s`` it fails fast with a typed error, so one slow dependency can hold
at most ``limit`` requests hostage instead of the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from surgeguard import metric_names as names
from surgeguard.metrics import latency_buckets

T = TypeVar("T")


class BulkheadRejected(Exception):
    """The dependency was not called (full) or did not answer in time (timeout)."""

    reason = "rejected"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency


class BulkheadFull(BulkheadRejected):
    reason = "full"


class BulkheadTimeout(BulkheadRejected):
    reason = "timeout"


class DependencyMetrics:
    """``surgeguard_dependency_*`` families, shared by all bulkheads of a service."""

    OUTCOMES = ("ok", "error", "timeout")

    def __init__(self, registry: CollectorRegistry, *, slo_seconds: float = 0.25) -> None:
        self.inflight = Gauge(
            names.DEPENDENCY_INFLIGHT,
            "Calls in flight to a dependency now.",
            ["dependency"],
            registry=registry,
        )
        self.limit = Gauge(
            names.DEPENDENCY_LIMIT,
            "Bulkhead limit of a dependency now (calls).",
            ["dependency"],
            registry=registry,
        )
        self.waiting = Gauge(
            names.DEPENDENCY_WAITING,
            "Calls waiting for a bulkhead slot now.",
            ["dependency"],
            registry=registry,
        )
        self.duration = Histogram(
            names.DEPENDENCY_DURATION_SECONDS,
            "Duration of a dependency call, seconds (after its wait).",
            ["dependency", "outcome"],
            buckets=latency_buckets(slo_seconds),
            registry=registry,
        )
        self.rejections = Counter(
            names.DEPENDENCY_REJECTIONS_TOTAL,
            "Calls refused by a bulkhead (full) or cut off (timeout).",
            ["dependency", "reason"],
            registry=registry,
        )


@dataclass(frozen=True)
class BulkheadStats:
    name: str
    limit: int
    in_flight: int
    waiting: int
    calls: int
    rejected_full: int
    timed_out: int
    errors: int


class Bulkhead:
    def __init__(
        self,
        name: str,
        limit: int,
        *,
        max_wait_s: float = 0.05,
        timeout_s: float = 2.0,
        metrics: DependencyMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0 seconds, got {max_wait_s}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        self.name = name
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.limit = 1
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._clock = clock
        self.calls = self.rejected_full = self.timed_out = self.errors = 0
        self.set_limit(limit)
        self._durations: tuple[Histogram, ...] = ()
        self._rejections: tuple[Counter, ...] = ()
        if metrics is not None:
            metrics.inflight.labels(name).set_function(lambda: self.in_flight)
            metrics.limit.labels(name).set_function(lambda: self.limit)
            metrics.waiting.labels(name).set_function(lambda: self.waiting)
            self._durations = tuple(metrics.duration.labels(name, o) for o in metrics.OUTCOMES)
            self._rejections = tuple(
                metrics.rejections.labels(name, r) for r in ("full", "timeout")
            )

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def set_limit(self, limit: int) -> None:
        """Raising wakes waiters at once; lowering never cancels calls in flight. 0: no
        slot at all (a budgeted dependency's share not granted yet): every call is
        refused at once, without waiting for a slot that cannot come."""
        if limit < 0:
            raise ValueError(f"bulkhead.{self.name} limit must be >= 0, got {limit}")
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1  # taken on the waiter's behalf
                waiter.set_result(None)

    async def _acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if self.limit == 0:
            raise BulkheadFull(self.name, "no slots: no share of its budget granted yet")
        if self.max_wait_s == 0:
            raise BulkheadFull(self.name, f"all {self.limit} slots busy")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted just as we gave up: hand it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise BulkheadFull(
                    self.name, f"all {self.limit} slots busy for {self.max_wait_s * 1000:.0f} ms"
                ) from None
            raise

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with bulkhead.slot():`` runs the block inside the bulkhead. Raises
        ``BulkheadFull`` when no slot frees up within ``max_wait_s``, ``BulkheadTimeout``
        when the block runs past ``timeout_s``; errors of the block propagate unchanged."""
        self.calls += 1
        try:
            await self._acquire()
        except BulkheadFull:
            self.rejected_full += 1
            if self._rejections:
                self._rejections[0].inc()
            raise
        started = self._clock()
        outcome = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            outcome = 2
            self.timed_out += 1
            if self._rejections:
                self._rejections[1].inc()
            raise BulkheadTimeout(
                self.name, f"no answer within {self.timeout_s * 1000:.0f} ms"
            ) from None
        except BaseException:
            outcome = 1
            self.errors += 1
            raise
        finally:
            self._release()
            if self._durations:
                self._durations[outcome].observe(self._clock() - started)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` inside the bulkhead (``slot``)."""
        async with self.slot():
            return await fn()

    def stats(self) -> BulkheadStats:
        return BulkheadStats(
            self.name,
            self.limit,
            self.in_flight,
            self.waiting,
            self.calls,
            self.rejected_full,
            self.timed_out,
            self.errors,
        )
