"""Whether the controller works: its ticks counted, the last failure kept with its
error, and readiness from them. (Issue 16: a controller whose every tick failed still
answered ``/api/v1/state`` with 200 and a stale ``last_tick_at``.)"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# ``/readyz`` answers 503 from this many failed ticks in a row.
NOT_READY_AFTER_FAILURES = 3
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class TickHealth:
    """Times in unix seconds (None: never)."""

    ticks: int = 0  # ticks that completed
    failures_total: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None

    @property
    def ok(self) -> bool:
        """The latest tick did not fail (true before the first tick)."""
        return self.consecutive_failures == 0

    def succeeded(self, at: float) -> TickHealth:
        return replace(self, ticks=self.ticks + 1, consecutive_failures=0, last_ok_at=at)

    def failed(self, error: str, at: float) -> TickHealth:
        return replace(
            self,
            failures_total=self.failures_total + 1,
            consecutive_failures=self.consecutive_failures + 1,
            last_error=error[:MAX_ERROR_CHARS],
            last_error_at=at,
        )

    def json(self) -> dict[str, object]:
        """The state's ``tick`` object."""
        return {
            "ok": self.ok,
            "ticks": self.ticks,
            "failures_total": self.failures_total,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_ok_at": self.last_ok_at,
        }


def error_text(exc: BaseException) -> str:
    """``"RuntimeError: boom"``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def readiness(health: TickHealth, *, running_s: float, grace_s: float) -> str | None:
    """Why the controller is not ready, or None when it is. ``running_s``: seconds
    since it started; ``grace_s``: how long it may run without a successful tick."""
    if health.consecutive_failures >= NOT_READY_AFTER_FAILURES:
        return (
            f"{health.consecutive_failures} control ticks failed in a row; "
            f"the last: {health.last_error}"
        )
    if health.last_ok_at is None and not math.isnan(running_s) and running_s > grace_s:
        return f"no control tick has succeeded in {running_s:.0f} s since start-up"
    return None
