"""Waiting, in async tests, for something that becomes true a little later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


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
