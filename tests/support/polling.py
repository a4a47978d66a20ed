"""Waiting for something that becomes true a little later (async tests, and sync ones
that watch a real process from outside)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 2.0, what: str = "condition"
) -> float:
    """Poll ``check`` until it holds; returns the seconds it took (fails after timeout_s)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def until(fetch: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """Call ``fetch`` until it returns something (not None) and return it; fail with
    ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while (found := fetch()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(every_s)
    return found


def until_truthy(
    check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2
) -> Any:
    """Call ``check`` until it returns something truthy (a non-empty list, True) and
    return it; fail naming ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(every_s)
    return found
