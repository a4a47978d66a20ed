"""When a failed job runs again: exponential backoff with jitter, and when to give up.

A pure object: the caller passes the random draw, so tests check exact numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` runs at most; the delay after attempt n is drawn from
    [d/2, d] with d = min(``cap_s``, ``base_s`` * 2**(n-1)) seconds ("equal jitter":
    it still grows every time, yet jobs that failed together spread out)."""

    max_attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_s <= 0:
            raise ValueError(f"base_s must be > 0 seconds, got {self.base_s}")
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s ({self.cap_s} s) must be >= base_s ({self.base_s} s)")

    def gives_up(self, attempts: int) -> bool:
        """True when ``attempts`` runs have failed and no more are allowed."""
        return attempts >= self.max_attempts

    def delay_s(self, attempts: int, draw: float) -> float:
        """Seconds to wait after the ``attempts``-th failure; ``draw`` in [0, 1)."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"draw must be in [0, 1), got {draw}")
        # Cap the exponent first: 2**1000 would overflow to inf long before the cap.
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempts - 1, 60))
        return ceiling / 2.0 * (1.0 + draw)
