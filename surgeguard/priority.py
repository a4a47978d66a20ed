"""Priority classes: who is shed first when the service is saturated."""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    """Lower value = more important. Sheddable goes first, critical last."""

    CRITICAL = 0
    NORMAL = 1
    SHEDDABLE = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_header(cls, value: bytes | None, default: Priority) -> Priority:
        """Parse an ``X-Priority`` header value; an unknown value counts as normal."""
        if value is None:
            return default
        return _BY_HEADER.get(value.strip().lower(), cls.NORMAL)


_BY_HEADER: dict[bytes, Priority] = {p.name.lower().encode(): p for p in Priority}
