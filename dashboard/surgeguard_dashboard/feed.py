"""The last data one browser session has seen, and how it is brought up to date.

A refresh reads the state, only the history points newer than the last one held (the
whole window only when the window grows or nothing is held), the recent decisions, the
audit trail and the load-test drills. When the controller cannot be reached the data is
kept as it was and the failure is counted, so the page can say so and go on showing the
last data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from surgeguard_dashboard.client import ControllerClient, ControllerError
from surgeguard_dashboard.drills import Drills
from surgeguard_dashboard.model import AuditEntry, Decision, State, Tick

TABLE_ROWS = 50  # recent decisions and audit entries shown
DRILLS_KEPT = 50  # recent drills: enough to mark every one in an hour's window


@dataclass
class Feed:
    state: State | None = None
    ticks: list[Tick] = field(default_factory=list)  # oldest first
    decisions: list[Decision] = field(default_factory=list)  # newest first
    audit: list[AuditEntry] = field(default_factory=list)  # newest first
    drills: Drills = field(default_factory=Drills)
    window_s: int = 0  # how far back ``ticks`` is complete, seconds
    updated_at: float = math.nan  # unix seconds of the last good refresh
    error: str | None = None  # why the last refresh failed (None: it did not)
    failures: int = 0  # refreshes failed in a row
    failing_since: float = math.nan  # unix seconds of the first of them

    @property
    def has_data(self) -> bool:
        return self.state is not None

    def refresh(self, client: ControllerClient, window_s: int, now: float) -> bool:
        """Bring the data up to date for a window of ``window_s`` seconds; ``now`` is
        unix seconds. Returns whether it worked; on failure nothing held changes."""
        try:
            state = client.state()
            incremental = bool(self.ticks) and self.window_s >= window_s
            if incremental:
                new = client.history(window_s, since=self.ticks[-1].at)
                ticks = [*self.ticks, *new]
            else:
                ticks = client.history(window_s)
            decisions = client.decisions(TABLE_ROWS)
            audit = client.audit(TABLE_ROWS)
            drills = client.drills(DRILLS_KEPT)
        except ControllerError as exc:
            self.error = exc.message
            self.failures += 1
            if math.isnan(self.failing_since):
                self.failing_since = now
            return False
        latest = ticks[-1].at if ticks else state.last_tick_at
        if math.isfinite(latest):
            ticks = [t for t in ticks if t.at >= latest - window_s]
        self.state, self.ticks = state, ticks
        self.decisions, self.audit, self.drills = decisions, audit, drills
        self.window_s = window_s
        self.updated_at = now
        self.error, self.failures, self.failing_since = None, 0, math.nan
        return True
