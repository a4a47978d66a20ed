"""A fake ``call_later`` driven by a ``FakeClock``: timers fire when the test advances time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.clock import FakeClock


class FakeTimer:
    def __init__(self, due: float, callback: Callable[[Any], None], arg: Any) -> None:
        self.due = due
        self.callback = callback
        self.arg = arg
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pending: list[FakeTimer] = []

    def call_later(self, delay_s: float, callback: Callable[[Any], None], arg: Any) -> FakeTimer:
        timer = FakeTimer(self.clock() + delay_s, callback, arg)
        self.pending.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward and fire, in order, every timer that came due."""
        self.clock.advance(seconds)
        due = sorted(
            (t for t in self.pending if t.due <= self.clock() and not t.cancelled),
            key=lambda t: t.due,
        )
        self.pending = [t for t in self.pending if t not in due and not t.cancelled]
        for timer in due:
            timer.callback(timer.arg)
