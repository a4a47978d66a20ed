"""Small asyncio helpers."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has really finished.

    A single ``cancel()`` can be lost on Python 3.11: ``asyncio.wait_for`` (used by
    redis-py around every send) may swallow a cancellation that lands as its inner
    await completes, and the task's loop then carries on. So cancel again until done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
