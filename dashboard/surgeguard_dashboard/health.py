"""Whether the controller works and is obeyed, as its state says: typed, pure.

``TickHealth`` is the state's ``tick`` (does the control loop complete its ticks, and
what went wrong last); ``Obedience`` is one replica's ``applied_version`` against the
``published_version`` (does it apply what the controller publishes). A controller
older than these fields sends neither: they parse to ``None`` and the page says
nothing it cannot know. Times are unix seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from surgeguard_dashboard.jsonread import integer, mapping, num


@dataclass(frozen=True)
class TickHealth:
    ok: bool
    failures_total: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_error_at: float = math.nan
    last_ok_at: float = math.nan

    @property
    def failing(self) -> bool:
        return not self.ok or self.consecutive_failures > 0

    @classmethod
    def parse(cls, raw: Any) -> TickHealth | None:
        if not isinstance(raw, dict):
            return None
        t = mapping(raw)
        return cls(
            ok=bool(t.get("ok", True)),
            failures_total=integer(t.get("failures_total")) or 0,
            consecutive_failures=integer(t.get("consecutive_failures")) or 0,
            last_error=str(t.get("last_error") or ""),
            last_error_at=num(t.get("last_error_at")),
            last_ok_at=num(t.get("last_ok_at")),
        )


@dataclass(frozen=True)
class Obedience:
    """Does a replica apply the control plane? ``obeying`` is the controller's call
    (the applied version has followed the published one within its grace)."""

    obeying: bool
    applied_version: int | None = None
    published_version: int | None = None
    disobeying_since: float = math.nan

    @classmethod
    def parse(cls, raw: Any) -> Obedience | None:
        r = mapping(raw)
        if "obeying" not in r:
            return None
        return cls(
            obeying=bool(r.get("obeying")),
            applied_version=integer(r.get("applied_version")),
            published_version=integer(r.get("published_version")),
            disobeying_since=num(r.get("disobeying_since")),
        )
