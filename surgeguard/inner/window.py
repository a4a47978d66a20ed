"""What an inner-loop algorithm sees once per window, and the interface it keeps.

An algorithm is pure: ``step(state, window) -> (state, limit)`` reads no clock and does
no I/O (time arrives as ``Window.now``), and its state is a frozen value, so a step can
be tried and thrown away. The runtime (``surgeguard.inner.loop``) builds the windows
from what the door records and enforces the limits returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Window:
    """One window of admitted requests, summarised when it closes.

    now: seconds (monotonic) at the close. limit: the limit enforced during the window
    (requests). floor, ceiling: the bounds in force now (the knob's declared minimum and
    the controller's ``concurrency_limit`` knob); every algorithm returns a limit inside
    them. completed: admitted requests that finished in the window. mean_s, p50_s,
    p90_s, min_s: their latency from admission to the end of the response, seconds
    (NaN when none finished). peak_in_flight: the most requests in flight at once, as
    seen when each one finished (requests). drops: those that finished with a 5xx (cut
    off, timed out or failed)."""

    now: float
    limit: int
    floor: int
    ceiling: int
    completed: int
    mean_s: float
    p50_s: float
    p90_s: float
    min_s: float
    peak_in_flight: int
    drops: int

    def clamp(self, value: float) -> int:
        """``value`` rounded down into [floor, ceiling] (requests)."""
        return max(self.floor, min(self.ceiling, int(value)))

    @property
    def seen(self) -> bool:
        """Whether any request finished (a latency to judge by)."""
        return self.completed > 0 and not math.isnan(self.mean_s)


class InnerAlgorithm(Protocol):
    """A per-window limit algorithm: parameters on the object, memory in ``state``."""

    name: ClassVar[str]

    def initial(self, limit: int) -> Any:
        """The state to start from, at ``limit`` (requests)."""
        ...

    def step(self, state: Any, window: Window) -> tuple[Any, int]:
        """The next state and the next limit (requests, within the window's bounds)."""
        ...


def check_range(
    name: str, value: float, low: float, high: float, *, open_high: bool = False
) -> None:
    """Raise ``ValueError`` naming ``name`` and its range when ``value`` is outside it."""
    inside = low <= value < high if open_high else low <= value <= high
    if not inside:
        closing = ")" if open_high else "]"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{closing}, got {value:g}")


def synced(estimate: float, window: Window) -> float:
    """The algorithm's own (unrounded) estimate, unless the limit enforced differs from
    it: a knob change re-clamped the limit, or the estimate is the start value. Then the
    enforced limit is the truth (requests)."""
    return estimate if int(estimate) == window.limit else float(window.limit)
