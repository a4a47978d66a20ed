"""The demo's db as a real PostgreSQL server, shared by every replica given its URL.

Every call is one transaction on a connection from a ``LimitedPool`` sized by the db's
bulkhead: it holds one of the ``SURGEGUARD_DB_CAPACITY`` lane rows for
``pg_sleep(latency * chaos latency multiplier * work)`` (see ``schema``: plainly a
stand-in for a query plan's work, the waiting is real and inside Postgres), then runs
the real statement (read an item, a feed page; insert an order, a signup). So the db's
capacity is what Postgres serves, shared by all replicas: two replicas do not double it.

Chaos (the control document's ``chaos["db"]``) applies to these calls: the latency
multiplier scales the held time, and with probability ``error_rate`` the transaction
fails inside Postgres after its work (a failing db still takes the time).

Trouble becomes ``DependencyError("db", ...)`` (the route's 503 with Retry-After naming
``db``): refused or lost connections, too many connections, server-side timeouts, any
Postgres error. Every call is bounded: the bulkhead's timeout cuts the call (its
connection is then closed), opening a connection has its own timeout, and the server
ends a statement past the same time (``statement_timeout``) and notices a vanished
client within ``client_connection_check_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from surgeguard.bulkhead import Bulkhead
from surgeguard.chaos import CALM, Chaos
from surgeguard_target_app.db.model import (
    FEED_PAGE_SIZE,
    FEED_WORK,
    ITEM_WORK,
    WRITE_WORK,
)
from surgeguard_target_app.db.pool import LimitedPool
from surgeguard_target_app.db.schema import HOLD_LANE_CALL, ensure_schema
from surgeguard_target_app.dependencies import DependencyError

T = TypeVar("T")

log = logging.getLogger("surgeguard_target_app.db")

NAME = "db"
CONNECT_TIMEOUT_S = 1.0
SCHEMA_TIMEOUT_S = 30.0
SCHEMA_RETRY_S = 1.0  # after a failed attempt, calls fail at once for this long
# How soon the server drops the work of a client that went away (a cut-off call).
CLIENT_CHECK_MS = 100


def _failure(exc: BaseException) -> DependencyError:
    """One line naming what went wrong with the db."""
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return DependencyError(NAME, f"too many connections: {exc}")
    if isinstance(exc, asyncpg.QueryCanceledError):
        return DependencyError(NAME, f"statement cancelled by the server: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return DependencyError(NAME, f"postgres error {exc.sqlstate}: {exc}")
    if isinstance(exc, TimeoutError):
        return DependencyError(NAME, f"timed out: {exc}")
    if isinstance(exc, OSError):
        return DependencyError(NAME, f"unreachable: {exc.strerror or exc}")
    return DependencyError(NAME, f"connection lost: {exc}")


_TROUBLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PostgresDb:
    def __init__(
        self,
        url: str,
        bulkhead: Bulkhead,
        *,
        capacity: int,
        base_latency_s: float,
        application_name: str = "surgeguard",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``capacity``: lanes (calls Postgres works on at once, for all replicas);
        ``base_latency_s``: seconds of work per call at work 1 when calm."""
        self._url = url
        self._bulkhead = bulkhead
        self._capacity = capacity
        self._base_latency_s = base_latency_s
        self._application_name = application_name
        self._rng = rng or random.Random()
        self._chaos = CALM
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._clock = clock
        self._retry_at = 0.0  # clock time before which no new schema attempt is made
        self._not_ready = ""
        self.pool = LimitedPool(self._connect, lambda: self._bulkhead.limit)

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the schema now if the server is up; else the first call will."""
        try:
            await self._ensure_ready()
        except DependencyError as exc:
            log.warning("db not ready at start (will retry on first use): %s", exc)

    async def close(self) -> None:
        await self.pool.close()

    def set_chaos(self, chaos: Chaos) -> None:
        self._chaos = chaos

    def limit_changed(self) -> None:
        self.pool.trim()

    async def _connect(self) -> asyncpg.Connection:
        # No client-side statement timeout: the bulkhead's cuts every call (and the
        # server's statement_timeout, the same, ends the work of one it cut).
        statement_timeout_ms = int(self._bulkhead.timeout_s * 1000)
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._url,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={
                    "application_name": self._application_name,
                    "statement_timeout": str(statement_timeout_ms),
                    "client_connection_check_interval": str(CLIENT_CHECK_MS),
                },
            )
        except TimeoutError:
            raise DependencyError(
                NAME, f"no connection within {CONNECT_TIMEOUT_S * 1000:.0f} ms"
            ) from None
        return conn

    async def _ensure_ready(self) -> None:
        """The schema, made once. Never a queue: while one attempt runs, or for
        ``SCHEMA_RETRY_S`` after one failed, calls fail at once (503 naming db)."""
        if self._ready:
            return
        if self._ready_lock.locked():
            raise DependencyError(NAME, "not ready yet: its schema is being made")
        if self._clock() < self._retry_at:
            raise DependencyError(NAME, f"not ready: {self._not_ready}")
        async with self._ready_lock:
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S)
                try:  # its own timeout: seeding may take longer than one call may
                    async with asyncio.timeout(SCHEMA_TIMEOUT_S):
                        await ensure_schema(conn, self._capacity)
                finally:
                    await conn.close(timeout=1.0)
            except _TROUBLE as exc:
                failure = _failure(exc)
                self._retry_at = self._clock() + SCHEMA_RETRY_S
                self._not_ready = failure.message
                raise failure from exc
            self._ready = True

    # -- one call ------------------------------------------------------------------------

    async def _call(
        self,
        work: float,
        query: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        durable: bool = False,
    ) -> T:
        """``query`` after ``work`` of lane time, in one transaction, in the bulkhead;
        ``durable``: a write, committed only once its WAL is flushed."""
        await self._ensure_ready()
        chaos = self._chaos
        work_s = self._base_latency_s * chaos.latency_multiplier * work
        fails = chaos.error_rate > 0 and self._rng.random() < chaos.error_rate

        async def run() -> T:
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await conn.execute(HOLD_LANE_CALL, work_s, fails, durable)
                    return await query(conn)
            except _TROUBLE as exc:
                raise _failure(exc) from exc

        return await self._bulkhead.call(run)

    async def item(self, item_id: int) -> dict[str, Any] | None:
        async def read(conn: asyncpg.Connection) -> dict[str, Any] | None:
            row = await conn.fetchrow(
                "SELECT id, name, price_cents FROM items WHERE id = $1", item_id
            )
            return dict(row) if row is not None else None

        return await self._call(ITEM_WORK, read)

    async def feed(self, page: int) -> list[dict[str, Any]]:
        first = (page - 1) * FEED_PAGE_SIZE + 1

        async def read(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT id, name FROM items WHERE id >= $1 ORDER BY id LIMIT $2",
                first,
                FEED_PAGE_SIZE,
            )
            return [dict(row) for row in rows]

        return await self._call(FEED_WORK, read)

    async def add_order(self, order_id: str, item_id: int, quantity: int) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO orders (id, item_id, quantity) VALUES ($1, $2, $3)",
                order_id,
                item_id,
                quantity,
            )

        await self._call(WRITE_WORK, write, durable=True)

    async def add_signup(self, signup_id: str, email: str, name: str) -> None:
        """Idempotent by id: a replayed signup (same Idempotency-Key) lands once."""

        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO signups (id, email, name) VALUES ($1, $2, $3) "
                "ON CONFLICT (id) DO NOTHING",
                signup_id,
                email,
                name,
            )

        await self._call(WRITE_WORK, write, durable=True)
