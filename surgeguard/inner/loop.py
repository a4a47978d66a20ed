"""The inner loop's runtime in a replica: every window, step the algorithm, set the limit.

The controller's knobs win. Its ``concurrency_limit`` knob (as the knob watcher applies
it) is the ceiling and the knob's declared minimum the floor: the limit the inner loop
enforces is always inside them, and a knob change re-clamps it at once
(``set_bounds``, called as the control document is applied). A pinned
``concurrency_limit`` turns the inner loop off: the pin is enforced exactly, and when
the pin goes the algorithm starts afresh from the knob. With Redis gone nothing is
applied, so the last knob stays the ceiling (fail static, as without the inner loop).

A window closes every ``window_s`` once at least ``MIN_SAMPLES`` requests have
finished in it, and after ``MAX_WINDOWS`` windows whatever it holds (Netflix's
``WindowedLimit`` keeps a minimum window size for the same reason: a latency from
three requests is noise). Visible: ``surgeguard_inner_limit`` (the limit enforced
now) and ``surgeguard_inner_moves_total{direction}`` (cut|grow).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from surgeguard import metric_names as names
from surgeguard.aio import cancel_and_wait
from surgeguard.inner.samples import WindowSamples
from surgeguard.inner.window import InnerAlgorithm
from surgeguard.limiter import Limiter

log = logging.getLogger("surgeguard.inner")

MIN_SAMPLES = 10  # requests a window needs before it closes early (WindowedLimit's 10)
MAX_WINDOWS = 10  # windows a window may stretch to while it gathers them
CUT, GROW = "cut", "grow"


def _brief(state: Any) -> str:
    """An algorithm's state for a debug line: its fields, long tuples as their length."""
    fields = getattr(state, "__dataclass_fields__", None)
    if fields is None:
        return repr(state)
    parts = []
    for name in fields:
        value = getattr(state, name)
        if hasattr(value, "__dataclass_fields__"):
            value = _brief(value)
        elif isinstance(value, tuple) and len(value) > 3:
            value = f"{len(value)} samples, last {value[-1]}"
        parts.append(f"{name}={value}")
    return ", ".join(parts)


class InnerMetrics:
    """``surgeguard_inner_limit`` and ``surgeguard_inner_moves_total{direction}``.

    Exported by every replica, so the names are one contract whether the inner loop
    runs or not: without it the limit is the knob's and no move is ever counted.
    ``limit``: reads the limit the door enforces now (requests), at scrape time."""

    def __init__(self, registry: CollectorRegistry, limit: Callable[[], float]) -> None:
        Gauge(
            names.INNER_LIMIT,
            "The concurrency limit the door enforces now (requests): the inner loop's, "
            "within the concurrency_limit knob; the knob's without an inner loop.",
            registry=registry,
        ).set_function(limit)
        moves = Counter(
            names.INNER_MOVES_TOTAL,
            "Changes of the inner loop's limit, by direction (cut|grow).",
            ["direction"],
            registry=registry,
        )
        self._moves = {d: moves.labels(direction=d) for d in (CUT, GROW)}

    def moved(self, direction: str) -> None:
        self._moves[direction].inc()


class InnerLoop:
    """Steps ``algorithm`` over the door's ``samples`` and sets ``limiter``'s limit.

    ``floor`` and ``ceiling``: the bounds at start (requests; the knob's declared
    minimum and its value). ``window_s``: seconds per window. ``metrics``: where its
    moves are counted. ``clock``: monotonic seconds (tests pass a fake one and call
    ``tick``)."""

    def __init__(
        self,
        algorithm: InnerAlgorithm,
        limiter: Limiter,
        *,
        floor: int,
        ceiling: int,
        window_s: float = 0.1,
        metrics: InnerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"bounds must satisfy 1 <= floor <= ceiling, got [{floor}, {ceiling}]")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        self.algorithm = algorithm
        self.limiter = limiter
        self.samples = WindowSamples()
        self.floor, self.ceiling = floor, ceiling
        self.pinned = False
        self.window_s = window_s
        self._clock = clock
        self._state: Any = algorithm.initial(ceiling)
        self._window_start = clock()
        self.moves = {CUT: 0, GROW: 0}
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        """The limit enforced now (requests)."""
        return self.limiter.limit

    # -- the controller's bounds --------------------------------------------------------

    def bounded(self, ceiling: int, *, pinned: bool) -> int:
        """The limit to enforce once the knob is ``ceiling`` (requests): the knob itself
        when pinned or when the loop had been pinned, else the limit now clamped under
        it. Changes nothing (``set_bounds`` commits)."""
        if pinned or self.pinned:
            return ceiling
        return max(self.floor, min(ceiling, self.limiter.limit))

    def set_bounds(self, ceiling: int, *, pinned: bool) -> None:
        """The knob is now ``ceiling`` (pinned or not). The caller enforces
        ``bounded(...)`` at the same time (the protection applies all knobs at once)."""
        if self.pinned and not pinned:
            self._state = self.algorithm.initial(ceiling)  # the pin is gone: start afresh
        self.ceiling, self.pinned = max(self.floor, ceiling), pinned
        if pinned:
            self.samples.reset()

    # -- one window ---------------------------------------------------------------------

    def tick(self) -> None:
        """Close the window if it is due, step the algorithm, enforce its limit."""
        now = self._clock()
        samples = self.samples
        if self.pinned:
            samples.reset()
            self._window_start = now
            return
        due = self._window_start + MAX_WINDOWS * self.window_s
        if samples.count < MIN_SAMPLES and now < due - 1e-9:
            return  # let the window gather more
        limiter = self.limiter
        window = samples.take(now=now, limit=limiter.limit, floor=self.floor, ceiling=self.ceiling)
        self._window_start = now
        self._state, wanted = self.algorithm.step(self._state, window)
        new = max(self.floor, min(self.ceiling, wanted))
        if new == limiter.limit:
            return
        direction = CUT if new < limiter.limit else GROW
        if log.isEnabledFor(logging.DEBUG):  # why it moved: the window and the state
            log.debug(
                "inner limit %d -> %d: %d done, p90 %.1f ms, mean %.1f ms, peak %d; %s",
                limiter.limit,
                new,
                window.completed,
                window.p90_s * 1000,
                window.mean_s * 1000,
                window.peak_in_flight,
                _brief(self._state),
            )
        limiter.set_limits(limit=new)
        self.moves[direction] += 1
        if self._metrics is not None:
            self._metrics.moved(direction)

    # -- the task -----------------------------------------------------------------------

    def start(self) -> None:
        self._window_start = self._clock()
        self._task = asyncio.create_task(self.run(), name="inner-loop")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def run(self) -> None:
        """Forever: one tick per window. A failing step is logged and the limit kept:
        the controller's ceiling still holds."""
        failing = False
        while True:
            await asyncio.sleep(self.window_s)
            try:
                self.tick()
                failing = False
            except Exception:
                if not failing:
                    log.exception("inner loop step failed; keeping the limit %d", self.limit)
                failing = True
