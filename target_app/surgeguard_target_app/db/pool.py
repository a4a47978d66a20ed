"""Connections to Postgres, never more open than the db's bulkhead allows.

A pool whose size is the bulkhead: a call takes an idle connection or opens one (the
bulkhead has already admitted it, so at most ``limit`` calls ask at once); when it
ends the connection goes back idle only while the open ones stay within the limit,
else it is closed. When the limit falls, idle surplus is closed at once
(``trim``) and busy surplus as each call ends, so once the calls in flight at the
cut have finished, open connections <= the limit.

A connection whose call was cut off (cancelled, timed out) or that failed at the
transport is closed, never reused: its state is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

log = logging.getLogger("surgeguard_target_app.db")


class LimitedPool:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        limit: Callable[[], int],
    ) -> None:
        """``connect`` opens one connection (with its own timeout); ``limit`` is the
        most connections that may be open now (the bulkhead's limit)."""
        self._connect = connect
        self._limit = limit
        self._idle: list[asyncpg.Connection] = []
        self._busy = 0  # handed out, or being opened
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def open(self) -> int:
        """Connections open or being opened (not counting those being closed)."""
        return len(self._idle) + self._busy

    @property
    def idle(self) -> int:
        return len(self._idle)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        self.trim()
        conn = self._take_idle()
        self._busy += 1
        reusable = False
        try:
            if conn is None:
                conn = await self._connect()
            yield conn
            reusable = True
        except asyncpg.PostgresError:
            # The server said no (a failed statement, chaos): the connection is fine,
            # its transaction was rolled back by the caller's block.
            reusable = True
            raise
        finally:
            self._busy -= 1
            if conn is not None:
                if reusable and not conn.is_closed() and self.open < self._limit():
                    self._idle.append(conn)
                else:
                    self._close(conn, graceful=reusable)
            self.trim()

    def trim(self) -> None:
        """Close idle connections while more are open than the limit allows."""
        limit = self._limit()
        while self._idle and self.open > limit:
            self._close(self._idle.pop(), graceful=True)

    async def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop(), graceful=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _take_idle(self) -> asyncpg.Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
        return None

    def _close(self, conn: asyncpg.Connection, *, graceful: bool) -> None:
        if not graceful or conn.is_closed():
            conn.terminate()  # at once: mid-query state, nothing to say to the server
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trimmed from outside the loop (nothing to await with)
            conn.terminate()
            return
        task = loop.create_task(self._close_gently(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_gently(conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=1.0)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()
